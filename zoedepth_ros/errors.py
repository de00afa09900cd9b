"""User-facing errors: the command line prints their message without a traceback."""


class ZoeDepthError(Exception):
    """Base of the errors whose message tells the user what is wrong and what to do."""


class RejectedMessage(ValueError):
    """A message (image, camera_info, depth) that cannot be used. `reason` is a short stable key for
    counting rejections per cause on /diagnostics; the message says what is wrong and what to do."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
