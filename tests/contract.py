"""Helpers asserting the error contract: exit code 2, one `decentral: error:` line, no traceback."""

from __future__ import annotations

import re

from decentral.cli import main


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """cli.main in-process; (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse --help and the like
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(argv: list[str], capsys, pattern: str) -> str:
    """The command exits 2 with exactly one error line matching `pattern`; returns that line."""
    code, _, err = run_cli(argv, capsys)
    errors = [ln for ln in err.splitlines() if ln.startswith("decentral: error:")]
    assert code == 2, f"exit {code}, stderr: {err[-2000:]}"
    assert "Traceback" not in err, err[-2000:]
    assert len(errors) == 1, err[-2000:]
    assert re.search(pattern, errors[0]), errors[0]
    return errors[0]
