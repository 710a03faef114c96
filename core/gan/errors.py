"""The base of every error a user can cause (bad config, data, checkpoint, seeds, metric request).

Hosts catch `GanError` to print one line (CLI) or record a FAILED job with a reason (worker); anything
else is a bug and keeps its traceback.
"""


class GanError(ValueError):
    """A user-caused failure; str(error) is a one-line message naming the field or file."""


USER_ERRORS = (GanError,)
