"""Exceptions raised by condense.

Every error a user can cause is a :class:`CondenseError` that also inherits the builtin it refines, so callers
can catch either. The CLI turns these into one line on stderr and exit code 2; anything else is a bug.
"""

from __future__ import annotations

__all__ = [
    "CondenseError",
    "ConfigError",
    "DataNotFoundError",
    "DataFormatError",
    "IntegrityError",
    "UnknownNameError",
    "MismatchError",
    "DivergenceError",
]


class CondenseError(Exception):
    """Base class of every error condense raises on purpose."""


class ConfigError(CondenseError, ValueError):
    """A configuration value is out of range, of the wrong type or unknown."""


class UnknownNameError(CondenseError, KeyError):
    """A registry lookup failed (unknown dataset, model, method, preset)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


class DataNotFoundError(CondenseError, FileNotFoundError):
    """Expected files are absent; the message names the path and the accepted layouts."""


class DataFormatError(CondenseError, ValueError):
    """Files exist but hold arrays of the wrong shape, dtype or range."""


class IntegrityError(CondenseError, ValueError):
    """A file's checksum, version or schema does not match what was recorded."""


class MismatchError(CondenseError, ValueError):
    """Two things that must agree do not (buffer vs dataset, artifact vs dataset)."""


class DivergenceError(CondenseError, RuntimeError):
    """Optimization produced non-finite values and could not be recovered."""
