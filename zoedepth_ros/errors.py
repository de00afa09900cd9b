"""User-facing errors: the command line prints their message without a traceback."""


class ZoeDepthError(Exception):
    """Base of the errors whose message tells the user what is wrong and what to do."""
