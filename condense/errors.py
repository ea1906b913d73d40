"""Exceptions raised by condense.

Every error a user can cause is a :class:`CondenseError` that also inherits the builtin it refines, so callers
can catch either. The CLI turns these into one line on stderr and exit code 2; anything else is a bug.
"""

from __future__ import annotations

__all__ = [
    "CondenseError",
    "ConfigError",
    "ArgumentTypeError",
    "DataNotFoundError",
    "OutputExistsError",
    "DataFormatError",
    "IntegrityError",
    "UnknownNameError",
    "MismatchError",
    "DivergenceError",
    "CollapseError",
    "LockedError",
]


class CondenseError(Exception):
    """Base class of every error condense raises on purpose."""


class ConfigError(CondenseError, ValueError):
    """A configuration value is out of range, of the wrong type or unknown."""


class ArgumentTypeError(ConfigError, TypeError):
    """An argument of a public function is of the wrong type (``ipc="3"``, ``generator="cpu"``, a tensor where a
    dataset is expected).

    It is a :class:`ConfigError` (so ``except ConfigError`` still catches every bad argument) and a ``TypeError``
    (what Python itself raises for a wrong type), as numpy's ``AxisError`` is both a ``ValueError`` and an
    ``IndexError``.
    """


class UnknownNameError(CondenseError, KeyError):
    """A registry lookup failed (unknown dataset, model, method, preset)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


class DataNotFoundError(CondenseError, FileNotFoundError):
    """Expected files are absent; the message names the path and the accepted layouts."""


class OutputExistsError(CondenseError, FileExistsError):
    """An output path already holds a file (or a folder where a file goes); the CLI replaces it only with --force."""


class DataFormatError(CondenseError, ValueError):
    """Files exist but hold arrays of the wrong shape, dtype or range."""


class IntegrityError(CondenseError, ValueError):
    """A file's checksum, version or schema does not match what was recorded."""


class MismatchError(CondenseError, ValueError):
    """Two things that must agree do not (buffer vs dataset, artifact vs dataset)."""


class DivergenceError(CondenseError, RuntimeError):
    """Optimization produced non-finite values and could not be recovered."""


class CollapseError(DivergenceError):
    """Optimization stayed finite but stopped doing anything useful (learned lr pinned at its floor, a matching
    distance stuck at its no-progress value with vanishing gradients, an exploding loss) and rolling back to a
    healthy state with a lower image lr did not recover it."""


class LockedError(CondenseError, RuntimeError):
    """Another process holds the lock of a work folder; the message names the folder and the holder's PID."""
