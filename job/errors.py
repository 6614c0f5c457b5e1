"""The errors a user can fix, reported as one line without a traceback."""


class CliError(Exception):
    """A problem to report to the user as one clear line (no traceback): what is wrong, what to do."""


class SettingsError(CliError, ValueError):
    """A setting is missing or invalid: a property group/key, a command-line option or an environment
    variable (the message names it and never contains a password)."""
