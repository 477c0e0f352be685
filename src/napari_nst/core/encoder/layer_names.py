"""VGG layer names derived from torchvision's ``features`` indices (no torch here).

``conv{block}_{i}``, ``relu{block}_{i}`` and ``pool{block}``, as pystiche names them, so that
options can be checked before torch is imported (in napari's process, say); and which network a
weights file holds, from its index alone (:func:`model_in_file`).
"""

from __future__ import annotations

import collections
import functools
import io
import os
import pickle
import zipfile
from typing import Any

from napari_nst.core.errors import OptionError

#: input channels from which VGG's 3x3 layers go through napari-nst's Winograd F(4x4, 3x3) in the
#: plan "winograd_wide" (encoder/winograd.py; here so that the memory estimate needs no torch)
WIDE_MIN = 256
#: the same for the plan that takes the 128-channel layers too (conv2_2, conv3_1). Which of the two
#: is faster differs between CPUs (per evaluation at 256 px: 0.91-1.00x the wide plan's under AVX2, 1.03x
#: in float32 with AVX-512; benchmarks/results/cpu.json), so the tuner measures both (core/compute/tune.py)
NARROW_MIN = 128

# torchvision's VGG configurations: numbers are conv output channels, "M" a 2x2 pooling
_CFGS: dict[str, list[Any]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def layer_names(model: str) -> list[str]:
    """Names of ``torchvision.models.<model>().features`` children, in order."""
    names, block, i = [], 1, 0
    for v in _CFGS[model]:
        if v == "M":
            names.append(f"pool{block}")
            block, i = block + 1, 0
        else:
            i += 1
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
    return names


def check_layers(model: str, layers: list[str] | tuple[str, ...], what: str) -> None:
    """Raise OptionError naming the valid layers if any of ``layers`` is unknown."""
    valid = layer_names(model)
    bad = [name for name in layers if name not in valid]
    if bad:
        raise OptionError(f"unknown {what} {bad} for {model}; valid names are: {', '.join(valid)}")


def min_side(model: str, layers: list[str] | tuple[str, ...]) -> int:
    """Shortest image side (px) for which every layer in ``layers`` has at least 1x1 pixels."""
    names = layer_names(model)
    last = max(names.index(n) for n in layers)
    pools = sum(1 for n in names[: last + 1] if n.startswith("pool"))
    return int(2**pools)


def conv_shapes(model: str) -> dict[int, tuple[int, int, int, int]]:
    """``{features index: weight shape}`` of the convolutions of torchvision's ``model``."""
    out, idx, in_ch = {}, 0, 3
    for v in _CFGS[model]:
        if v == "M":
            idx += 1
        else:
            out[idx] = (int(v), in_ch, 3, 3)
            idx, in_ch = idx + 2, int(v)  # the conv, then its ReLU
    return out


def model_in_file(path: str | os.PathLike[str]) -> str | None:
    """Which VGG a weights file (``torch.save``'s zip format) holds, ``vgg16`` or ``vgg19``, read
    without torch: only its pickled index (names and shapes; no tensor data is read and no code
    runs: any object but a tensor or a dict refuses). None when unknown (not such a file,
    unreadable, or neither network fits): callers then say vgg19, as before the file is read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _model_in_file(os.path.realpath(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _model_in_file(path: str, mtime: int, size: int) -> str | None:
    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return None
            state = _Index(io.BytesIO(z.read(name))).load()
    except Exception:  # not a zip, a pickle of other objects, truncated ...
        return None
    if not isinstance(state, dict):
        return None
    convs: dict[int, tuple[int, ...]] = {}
    for key, shape in state.items():
        parts = key[len("features.") :].split(".") if key.startswith("features.") else key.split(".")
        if isinstance(shape, tuple) and len(shape) == 4 and len(parts) == 2 and parts[0].isdigit():
            if parts[1] == "weight":
                convs[int(parts[0])] = shape
    if not convs:
        return None
    fits = [m for m in _CFGS if all(conv_shapes(m).get(i) == s for i, s in convs.items())]
    return fits[0] if len(fits) == 1 else None


def _tensor_shape(storage: Any, offset: Any, size: Any, *rest: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in size)


class _Index(pickle.Unpickler):
    """Unpickles a state dict's index only: each tensor as its shape; refuses every other object."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _tensor_shape
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, *rest: data
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name.endswith("Storage"):
            return name
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a plain state dict")

    def persistent_load(self, pid: Any) -> Any:
        return None  # the tensor's data: not read
