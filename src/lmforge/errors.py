"""User-facing errors.

`LmforgeError` is raised for anything a user can fix (bad config, bad input file, missing run
directory). The CLI prints its message and exits non-zero without a traceback; everything else is a
bug and keeps its traceback.
"""


class LmforgeError(Exception):
    """An error whose message tells the user what is wrong and what to do."""


class ConfigError(LmforgeError):
    """A config key is unknown, has the wrong type or an invalid value."""


class DataError(LmforgeError):
    """Input data is missing, unreadable or leaves nothing to train on."""
