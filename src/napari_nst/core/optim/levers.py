"""Levers: engine internals that benchmarks and tests switch to measure what each default buys.

Not an option: users never set these, and nothing in the product constructs a :class:`Levers`. A
benchmark or a test runs the engine inside ``with use_levers(Levers(...)):``; every engine run started
in that block (in this thread or task: a context variable) reads them once, at its start. Fields left
None keep the engine's own choice. No torch here: the memory model reads the history length too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Levers:
    """What a measurement may switch. None: the engine's choice (measured, see the benchmarks page)."""

    #: L-BFGS curvature pairs kept (default: ``compute.memory.LBFGS_HISTORY``, tiled ``TILED_HISTORY``)
    history_size: int | None = None
    #: "ours" (``optim.lbfgs.LBFGS``) or "torch" (``torch.optim.LBFGS(max_iter=1)``, the textbook's)
    lbfgs: Literal["ours", "torch"] = "ours"
    #: our L-BFGS's trust region: the largest change of a pixel in one step (None: the engine's constant)
    max_change: float | None = None
    #: "float32" or "bfloat16": how L-BFGS stores its pairs (None: by device, ``lbfgs_history_dtype``)
    history_dtype: Literal["float32", "bfloat16"] | None = None
    #: the network plan's switches (None: ``compute.device.network_plan``'s choice for the device)
    channels_last: bool | None = None
    lean_pool: bool | None = None
    winograd: bool | None = None
    winograd_wide: bool | None = None
    #: with ``winograd_wide``: the fewest input channels of a layer that runs it (256 or 128)
    winograd_min: int | None = None
    #: with ``winograd_wide``: keep the transformed kernels (True) or make them at every call (False)
    #: at every level (None: the memory plan's choice by level size, ``compute.memory.keeps_kernels``)
    keep_kernels: bool | None = None
    #: weight of each coarser pyramid level relative to the one below it (None: the engine's constant)
    pyramid_gamma: float | None = None
    #: replay each level's evaluation as a CUDA graph on NVIDIA GPUs
    cuda_graph: bool = True
    #: the tiles' halo of context in px (None: from the network's receptive field)
    tile_halo: int | None = None
    #: when a bfloat16 level goes on in float32 (``optim.engine._Finish``): "auto" (once progress per
    #: evaluation falls below bfloat16's resolution), "off" (never) or after the level's N-th evaluation
    finish: str | int = "auto"
    #: the factor on bfloat16's resolution in the "auto" rule (None: the engine's constant)
    finish_factor: float | None = None
    #: regions mapped to None keep the content's pixels (``Controls.composite``); False: the guided
    #: Grams alone, as before (only to measure the bleed it removes)
    keep_unstyled: bool = True
    #: a stack's frame starts from its content plus the carried paint where the flow cannot be trusted
    #: (``stack.flow._repainted``); False: from the warped pastiche everywhere, as Ruder et al. start
    #: (only to measure the smeared band at the frame's edge it removes)
    repaint_unreliable: bool = True


DEFAULT = Levers()

_current: ContextVar[Levers] = ContextVar("napari_nst_levers", default=DEFAULT)


def current() -> Levers:
    """The levers in force here (the defaults outside a :func:`use_levers` block)."""
    return _current.get()


@contextmanager
def use_levers(levers: Levers) -> Iterator[Levers]:
    """Engine runs started inside the block use ``levers`` (benchmarks and tests only)."""
    token = _current.set(levers)
    try:
        yield levers
    finally:
        _current.reset(token)
