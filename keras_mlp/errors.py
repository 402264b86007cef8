"""The package's one error type for mistakes in what a user asked for."""


class UserError(ValueError):
    """Bad input from the user: a flag, a file, a directory.

    The command line prints its message as one line and exits non-zero without a
    traceback; library callers can catch it as a `ValueError`.
    """
