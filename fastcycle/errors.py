"""The one exception type for mistakes a user can make (bad flag, missing folder, wrong checkpoint).

The CLI prints its message as a single line and exits 2; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message names the thing and what to do."""
