"""The commands, one module each: what `decentral <command>` runs after parsing its flags.

    run       `decentral run`: one coupled-training job (`execute`, `run_job`, `run_local`,
              `save_run`, `load_run`): the local engine or Ray
    sweep     `decentral sweep`: a resumable sweep (the library: `decentral.sweep.run_sweep`)
    theory    `decentral theory`: the effective theory's table, plots and provenance
    topology  `decentral topology`: inspect or generate graph files
    plot      `decentral plot`: Fig. 3 style figures from a sweep directory
    common    what every `main` shares: config from flags, one JSON object on stdout

Each module's `main(args)` takes the parsed flags (an argparse namespace) from `decentral.cli`,
builds the typed config, calls the library and prints the result; it returns the exit code.
Jobs sit on top: no library module imports them (tests/test_architecture.py).
"""
