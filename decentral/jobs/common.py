"""What every command's `main(args)` shares: its config from the parsed flags, and JSON output.

With `--json`, stdout carries exactly one JSON object: the CLI runs the command inside
`stdout_to_stderr`, so anything written to descriptor 1 before it (Ray's log lines from its
C++ core and Python threads included) goes to stderr, and `print_json` restores stdout to print
the object.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

# namespace entries that are the command's own options, not config keys
COMMAND_KEYS = ("config", "json", "handler", "command")

_STDOUT_FD: dict = {}  # with --json: the real stdout's saved descriptor, while fd 1 goes to stderr


def config_from_args(cls, args, skip: tuple[str, ...] = COMMAND_KEYS):
    """Config `cls` from parsed flags: defaults < --config FILE < explicit flags, validated."""
    from ..config import merge, read_config_file

    file_values = read_config_file(args.config) if getattr(args, "config", None) else {}
    flags = {k: v for k, v in vars(args).items() if k not in skip}
    return merge(cls, file_values, flags)


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool):
    """While enabled, descriptor 1 goes to stderr until `print_json` (see the module docstring)."""
    if not enabled:
        yield
        return
    try:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError):  # no real descriptor 1: nothing to guard
        yield
        return
    _STDOUT_FD["saved"] = saved
    try:
        yield
    finally:
        _restore_stdout()


def _restore_stdout() -> None:
    saved = _STDOUT_FD.pop("saved", None)
    if saved is not None:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def print_json(obj) -> None:
    """The command's one JSON object, on the real stdout."""
    _restore_stdout()
    print(json.dumps(obj, indent=None, default=_json_default))


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
