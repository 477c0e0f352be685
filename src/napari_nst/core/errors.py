"""The engine's exceptions (no torch here, so another process can unpickle them).

Every one is a ``ValueError`` or ``MemoryError`` whose message says what to change, but for
:class:`EngineProcessError` (the engine's process was lost) and :class:`InstallError` (a package
to install or fix).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ImageError(ValueError):
    """An input image that cannot be used."""


class OptionError(ValueError, TypeError):
    """An unknown option or a bad option value."""


class WeightsError(ValueError):
    """Network weights that cannot be found, read or used."""


class NonFiniteLossError(ValueError):
    """The objective became NaN or infinite; ``last_image`` is the last finite pastiche (or None)."""

    def __init__(self, message: str, last_image: np.ndarray | None = None) -> None:
        super().__init__(message)
        self.last_image = last_image

    def __reduce__(self) -> tuple[Any, ...]:  # keep last_image across processes
        return (type(self), (str(self), self.last_image))


class DeviceMemoryError(MemoryError):
    """The run does not fit the device's memory; ``suggested_size`` should fit."""

    def __init__(self, message: str, suggested_size: int = 0) -> None:
        super().__init__(message)
        self.suggested_size = suggested_size

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.suggested_size))


class EngineProcessError(ChildProcessError):
    """The engine's process ended without a result (crashed or was killed).

    An OSError, not a RuntimeError: napari's thread workers swallow RuntimeErrors.
    """


class InstallError(RuntimeError):
    """A package the engine needs cannot be imported (missing, or a version or build that does not
    go with torch); the message says what to install."""


class PrecisionWarning(UserWarning):
    """A precision asked for that the device only emulates (slow); the message says what to use."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler ending the job, ``kill``), raised by the command line's signal
    handler where Ctrl-C raises KeyboardInterrupt, so that the same code keeps the work done."""


class MissingExtraError(ImportError):
    """An optional part whose packages are not installed; the message names the ``pip install`` line."""
