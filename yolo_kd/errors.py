"""The one exception type for user mistakes: a one-line message that names the problem and the fix."""


class KDConfigError(ValueError):
    """Raised before training starts when an input cannot work (bad path, class mismatch, bad recipe...).

    The command line prints its message alone and exits with status 2; the Python API raises it unchanged.
    """
