"""The progress record the engine yields (no torch here: it crosses process boundaries)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Progress:
    """One objective evaluation.

    ``losses`` holds the unweighted ``content``, ``style`` (and ``tv`` when used) terms and the
    weighted ``total``, all of the image this record carries, evaluated at ``shape``.
    ``image`` is float32 ``(H, W, 3)`` in [0, 1] at that working shape (coarse-to-fine levels are
    smaller than the output), or None on records skipped by ``preview_every``. The last record
    always carries an image. ``weights`` are the resolved ``a``, ``b`` (and tv) of this level.
    ``device``, ``precision`` (the network's: ``float32`` or ``bfloat16``) and ``size`` (the output's
    long edge) say what the run chose; ``total`` is its number of evaluations.

    In a stack run (:func:`napari_nst.iter_stylize_stack`) ``frame`` is the 0-based frame the
    record belongs to, of ``frames``; ``step``/``total`` count that frame's evaluations (its last
    record has ``step == total`` and that frame's pastiche), ``stack_step``/``stack_total`` the
    whole stack's, and ``elapsed`` is the time since the stack started. A single image is frame 0
    of 1 with ``stack_step == step``.

    ``tile_size``: the size of the tiles the evaluation was made in (0: the whole image at once);
    ``note`` says why when the engine chose tiles because the whole image does not fit.

    ``update``: on the first record made under options changed during the run
    (:meth:`napari_nst.core.api.StyleRun.update`), those options (merged when several updates
    came within one evaluation), applied from this record's ``step`` on; ``update_id`` is the
    number of the newest update it includes (1, 2 ... as ``update()`` returned it). None and 0 on
    every other record.
    """

    step: int
    total: int
    losses: dict[str, float]
    image: np.ndarray | None
    level: int = 1
    levels: int = 1
    shape: tuple[int, int] = (0, 0)
    elapsed: float = 0.0
    weights: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    last_of_level: bool = False
    precision: str = "float32"
    size: int = 0
    frame: int = 0
    frames: int = 1
    stack_step: int = 0
    stack_total: int = 0
    note: str = ""  # a one-line remark: a stack's about this frame ("no optical flow: ..."), or why tiles
    tile_size: int = 0  # the tiles (px) this evaluation was made in (objective/tiles.py); 0: the whole image
    update: dict[str, Any] | None = None  # options changed during the run, applied from this step on (core/live.py)
    update_id: int = 0  # the newest update() this record's evaluation applied (0: none)


@dataclass
class Pastiche:
    """The newest pastiche of a run, handed back when the run ends, however it ends: finished,
    stopped (the generator closed, Ctrl-C, SIGTERM) or failed after its first evaluation.

    ``image`` is the image of the last *finished* evaluation, ``step`` (of ``total``): float32
    ``(H, W, 3)`` in [0, 1] at that evaluation's working ``shape`` (level ``level`` of ``levels``;
    coarse levels are smaller than the output of long edge ``size``), with ``losses`` its losses.
    It is the full-precision image a run resumes from (``resume=``). In a stack run ``frame`` is
    the frame it belongs to, of ``frames``. ``settings``: what a resumed run must match (the
    options and digests of the inputs; filled by :func:`napari_nst.iter_stylize`). ``state``: the
    image the optimiser works on where it differs from ``image`` (``preserve_color="luminance"``:
    the image the network evaluated, whose luminance ``image`` shows with the content's colours);
    None: ``image``.
    A resumed run starts from ``state`` if given.

    Handing it back costs nothing during the run: the engine keeps the evaluated image on the
    device and copies it to the host once, on the way out.
    """

    image: np.ndarray
    step: int
    total: int
    losses: dict[str, float] = field(default_factory=dict)
    level: int = 1
    levels: int = 1
    shape: tuple[int, int] = (0, 0)
    size: int = 0
    frame: int = 0
    frames: int = 1
    settings: dict[str, Any] = field(default_factory=dict)
    state: np.ndarray | None = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        """Whether the run made all its evaluations."""
        return self.step >= self.total
