"""Errors a user can act on. The CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """Bad input or an unmet requirement that the user can fix; the message says how."""


class ConfigError(UserError):
    """A configuration key, value or file is wrong."""


class NotBuiltError(UserError):
    """A feature that is declared (so configs parse) but not built yet."""
