"""Exceptions shared by the CLI commands."""


class CliError(Exception):
    """An error to report to the user as one clear line (no traceback)."""
