"""The headless engine: no Qt, no napari.

Its front door is :mod:`.api` (``stylize``, ``iter_stylize`` and their stack versions), checked by
:mod:`.inputs` and configured by :mod:`.options`; the subsystems are subpackages:

- ``image``: arrays and files <-> float32 RGB in [0, 1], videos, image <-> tensor;
- ``encoder``: the VGG feature extractor and its weights;
- ``objective``: the paper's losses, the artistic controls, tiles, the CUDA graph;
- ``optim``: the optimisation loop as a generator (``engine``), L-BFGS, the image pyramid;
- ``compute``: device, precision and layout per device, the memory model;
- ``process``: the engine in a warm child process;
- ``stack``: stacks and time-lapses; ``distributed``: batches and stacks on dask;
- ``preview``: the instant preview of a feed-forward network (onnxruntime, ``napari-nst[preview]``);
  the function is ``napari_nst.preview`` (not exported here, where the name is the module's).

Importing this package imports no torch: torch comes with the modules that compute (the encoder, the
objective, the optimiser, ``compute.device``, ``image.tensors``, ``stack.engine``), imported when a
run starts. The napari process imports the torch-free ones only.
"""

from napari_nst.core.api import iter_stylize, prepare, stylize
from napari_nst.core.errors import (
    DeviceMemoryError,
    EngineProcessError,
    ImageError,
    InstallError,
    NonFiniteLossError,
    OptionError,
    WeightsError,
)
from napari_nst.core.image.arrays import to_rgb_float
from napari_nst.core.options import Options
from napari_nst.core.records import Progress

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
