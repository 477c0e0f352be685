"""The headless engine: no Qt, no napari. Torch is imported by ``engine`` and ``vgg`` only."""

from .api import iter_stylize, prepare, stylize
from .errors import (
    DeviceMemoryError,
    EngineProcessError,
    ImageError,
    InstallError,
    NonFiniteLossError,
    OptionError,
    WeightsError,
)
from .images import to_rgb_float
from .options import Options
from .records import Progress

__all__ = [
    "DeviceMemoryError",
    "EngineProcessError",
    "ImageError",
    "InstallError",
    "NonFiniteLossError",
    "OptionError",
    "Options",
    "Progress",
    "WeightsError",
    "iter_stylize",
    "prepare",
    "stylize",
    "to_rgb_float",
]
