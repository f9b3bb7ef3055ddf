"""Exception types of the library.

Every error a user can cause (a bad file, a bad option, a bad config value) is an
:class:`InputError` whose message names the file or option and says how to fix it.
The CLI maps it to exit code 2; the library never exits or prints.
"""

from __future__ import annotations


class RegisterError(Exception):
    """Base class of every error raised on purpose by ``register``."""


class InputError(RegisterError, ValueError):
    """Bad user input: an unreadable file, invalid points, an unknown option value.

    The message always names the offending file or option and says how to fix it.
    """


class ConfigError(InputError):
    """An unknown key or an invalid value in a pipeline configuration (TOML preset)."""
