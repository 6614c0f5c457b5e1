"""The errors a user can fix, reported as one line without a traceback.

``UserError`` is the base the command line and the job's entry point catch (cli.errors.CliError,
job.main.JobError and SettingsError derive from it)."""


class UserError(Exception):
    """A problem to report to the user as one clear line (no traceback): what is wrong, what to do."""


class SettingsError(UserError, ValueError):
    """A setting is missing or invalid: a property group/key, a command-line option or an environment
    variable (the message names it and never contains a password)."""
