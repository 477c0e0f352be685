"""A stack's frames, read one at a time, and how many evaluations each gets (numpy only: the
napari process validates stacks with these without importing torch)."""

from __future__ import annotations

from typing import Any

import numpy as np

#: frames after the first get ``frame_steps`` evaluations; None: this fraction of ``steps``
#: (measured in docs/stacks.md)
FRAME_STEPS_FRACTION = 1 / 3


def frame_steps_for(steps: int | None, frame_steps: int | None) -> int:
    """Evaluations of each frame after the first: ``frame_steps``, else a third of ``steps``."""
    if frame_steps is not None:
        return int(frame_steps)
    return max(1, round(int(steps or 1) * FRAME_STEPS_FRACTION))


class FrameSource:
    """Frames of a stack as float RGB (H, W, 3) in [0, 1], read one at a time.

    ``frames``: anything with ``len`` and indexing that gives one 2-D image per index, as
    :func:`napari_nst.stylize` takes it (a numpy array with the frame axis first, a list, a lazy
    reader of files). ``limits``: the values mapped to 0 and 1 for every frame (None: by dtype).
    """

    def __init__(self, frames: Any, limits: tuple[float, float] | None = None) -> None:
        self.frames, self.limits = frames, limits

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> np.ndarray:
        from napari_nst.core.image.arrays import to_rgb_float

        return to_rgb_float(self.frames[i], limits=self.limits, name=f"frame {i}")
