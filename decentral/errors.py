"""One exception type for bad user input; the CLI turns it into a one-line error, exit 2."""


class UserInputError(ValueError):
    """Input the user can fix: a bad flag, config key, file or value. Message is one line."""


class Interrupted(Exception):
    """The user stopped a run (Ctrl-C) and its checkpoint is saved: the CLI exits with 130."""
