"""The command line's one-line error."""

from stores.errors import UserError


class CliError(UserError):
    """A problem to report to the user as one clear line (no traceback): what is wrong, what to do."""
