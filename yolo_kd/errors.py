"""The one exception type for user mistakes: a one-line message that names the problem and the fix."""


class KDConfigError(ValueError):
    """Raised before training starts when an input cannot work (bad path, class mismatch, bad recipe...).

    The command line prints its message alone and exits with status 2; the Python API raises it unchanged.
    """


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type name when empty), cut to `limit` characters: what a
    one-line KDConfigError quotes of the error behind it."""
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:limit]
