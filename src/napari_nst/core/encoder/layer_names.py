"""VGG layer names derived from torchvision's ``features`` indices (no torch here).

``conv{block}_{i}``, ``relu{block}_{i}`` and ``pool{block}``, as pystiche names them, so that
options can be checked before torch is imported (in napari's process, say).
"""

from __future__ import annotations

from typing import Any

from napari_nst.core.errors import OptionError

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
