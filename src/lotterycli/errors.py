"""The one exception type the CLI turns into a one-line error message and a non-zero exit."""


class LotteryError(Exception):
    """A user-facing error: bad input, bad option, corrupted file. The message is shown as is."""
