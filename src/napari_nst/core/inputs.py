"""What a run takes, checked before any work (no torch): images and stacks loaded as float32 RGB, styles,
controls and the mask checked against them, options validated. Every front end calls :func:`prepare` or
:func:`prepare_stack` first; errors are ValueErrors that say what to change."""

from __future__ import annotations

import os
from typing import Any, Union

import numpy as np

from napari_nst.core.image.arrays import ArrayLike, to_rgb_float
from napari_nst.core.options import Options

ImageInput = Union[ArrayLike, str, "os.PathLike[str]"]


def load_image(image: ImageInput, name: str, limits: Any) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        from napari_nst.core.image.files import read_image

        image = read_image(image)
    return to_rgb_float(image, limits=limits, name=name)


def check_weights_path(weights: Any) -> None:
    """Fail early (no torch needed) on a weights path that cannot be a file."""
    from pathlib import Path

    from napari_nst.core.errors import WeightsError

    if weights is None:
        return
    p = Path(weights).expanduser()
    if not p.exists():
        raise WeightsError(f"no weights file at {str(p)!r}; check the path")
    if p.is_dir():
        raise WeightsError(f"{str(p)!r} is a directory; pass the weights file (.pth) inside it")


StyleInput = Union[ImageInput, "list[ImageInput]", "tuple[ImageInput, ...]"]


def prepare(content: ImageInput, style: StyleInput, **options: Any) -> tuple[np.ndarray, Any, Options]:
    """Validate everything before any work: the images as float32 RGB and the options.

    ``style``: one image, or a list of them (returned as a list of arrays).
    """
    opts = Options.from_kwargs(**options)
    c = load_image(content, "content", opts.content_limits)
    opts.check_size(c.shape[:2])
    check_weights_path(opts.weights)
    several = isinstance(style, (list, tuple))
    loaded = load_styles(style, c.shape[:2], opts)
    _check_controls(c, [s.shape[:2] for s in loaded], opts)
    if isinstance(opts.init, np.ndarray):
        to_rgb_float(opts.init, name="init")  # fail early on a bad init array
    check_init(opts)
    if opts.mask is not None:
        from napari_nst.core.image.masks import check_mask

        opts.mask = check_mask(opts.mask, c.shape[:2], opts.level_shapes(c.shape[:2])[-1])
    return c, (loaded if several else loaded[0]), opts


def check_init(opts: Options) -> None:
    """OptionError for ``init="preview"`` without the preview's packages (naming the install line)."""
    if isinstance(opts.init, str) and opts.init == "preview":
        from napari_nst.core.errors import OptionError
        from napari_nst.core.extras import missing

        why = missing("preview", "the instant preview")
        if why is not None:
            raise OptionError(f"init='preview': {why}; or start from the content (init='content')")


def load_styles(style: StyleInput, content_shape: tuple[int, int], opts: Options) -> list[np.ndarray]:
    """One style image or a list of them, loaded and checked against the content and the options."""
    several = isinstance(style, (list, tuple))
    given = list(style) if several else [style]  # type: ignore[arg-type]
    if not given:
        from napari_nst.core.errors import OptionError

        raise OptionError("style is an empty list; give at least one style image")
    opts.check_scales(len(given))
    loaded = []
    for i, one in enumerate(given):
        s = load_image(one, f"style {i}" if several else "style", opts.style_limits)
        opts.check_style_size(content_shape, s.shape[:2], i)
        loaded.append(s)
    return loaded


def _check_controls(c: np.ndarray, style_shapes: list[tuple[int, int]], opts: Options) -> None:
    """style_blend, regions, region_styles and style_regions against the images (no torch)."""
    from napari_nst.core.errors import OptionError
    from napari_nst.core.objective.regions import check_mapping, check_regions, check_style_regions, check_styled

    n_styles = len(style_shapes)

    if opts.style_blend is not None:
        if len(opts.style_blend) != n_styles:
            raise OptionError(
                f"style_blend has {len(opts.style_blend)} weights but there "
                f"{'is 1 style image' if n_styles == 1 else f'are {n_styles} style images'}; "
                "give one weight per style"
            )
        if sum(opts.style_blend) <= 0:
            raise OptionError("style_blend's weights are all 0; give at least one a positive weight")
    mapping = check_mapping(opts.region_styles, n_styles)
    if opts.regions is not None:
        opts.regions = check_regions(opts.regions, c.shape[:2])
        check_styled(opts.regions, mapping)
    elif opts.region_styles:
        raise OptionError("region_styles is given but regions is not; give the label image too (regions=...)")
    opts.style_regions = check_style_regions(opts.style_regions, style_shapes, opts.regions is not None)


def stack_frames(stack: Any, axis: int = 0, limits: Any = None) -> Any:
    """``stack`` (an array whose ``axis`` runs over frames, a sequence of 2-D images, or the path of
    a multi-page TIFF, a folder of numbered images or a video: :func:`~napari_nst.core.image.stacks.read_stack`) as a
    :class:`~napari_nst.core.stack.engine.FrameSource`; raises ``ImageError`` (a ValueError) for a 2-D
    array or one RGB image, an axis out of range, or an empty stack."""
    from napari_nst.core.errors import ImageError
    from napari_nst.core.stack.frames import FrameSource

    if isinstance(stack, (str, os.PathLike)):  # a multi-page TIFF, a folder of images, a video
        from napari_nst.core.image.stacks import read_stack

        stack = read_stack(stack)
    if isinstance(stack, (list, tuple)) or hasattr(stack, "shapes"):  # images, or a lazy reader (io.py)
        if len(stack) == 0:
            raise ImageError("the stack has no frames")
        shapes = list(stack.shapes) if hasattr(stack, "shapes") else [np.shape(f) for f in stack]
        sizes = sorted({tuple(sh[:2]) for sh in shapes})
        if len(sizes) > 1:
            first = next(i for i, sh in enumerate(shapes) if tuple(sh[:2]) != tuple(shapes[0][:2]))
            raise ImageError(
                f"the frames differ in size: frame 0 is {shapes[0][0]}x{shapes[0][1]} px, frame {first} "
                f"is {shapes[first][0]}x{shapes[first][1]} px; give frames of one size"
            )
        return FrameSource(stack, limits)
    arr = np.asarray(stack)
    if arr.ndim < 3:
        raise ImageError(
            f"a stack needs a frame axis and two image axes; this array has shape {arr.shape}: "
            "for one image use napari_nst.stylize"
        )
    if not -arr.ndim <= int(axis) < arr.ndim:
        raise ImageError(f"axis={axis} is out of range for a stack of shape {arr.shape}; use 0 to {arr.ndim - 1}")
    frames = np.moveaxis(arr, int(axis), 0)
    if frames.ndim == 3 and frames.shape[-1] in (3, 4):  # frames 3 or 4 px wide: an RGB(A) image
        raise ImageError(
            f"shape {arr.shape} along axis {axis} is {frames.shape[0]} frames of {frames.shape[1:]}: "
            "this looks like one RGB image; use napari_nst.stylize, or put the frame axis first"
        )
    if frames.shape[0] == 0:
        raise ImageError(f"the stack of shape {arr.shape} has no frames along axis {axis}")
    if limits is None and frames.size and not _unit_range(frames):
        colour = frames[..., :-1] if frames.ndim == 4 and frames.shape[-1] in (2, 4) else frames
        lo, hi = float(np.min(colour)), float(np.max(colour))  # one range for all frames: no flicker
        limits = (lo, hi) if hi > lo and np.isfinite(hi - lo) else None
    return FrameSource(frames, limits)


def _unit_range(frames: np.ndarray) -> bool:
    """Whether each frame maps by its dtype alone (uint8, or floats inside [0, 1])."""
    if frames.dtype == np.uint8:
        return True
    return frames.dtype.kind == "f" and bool(np.nanmin(frames) >= 0.0) and bool(np.nanmax(frames) <= 1.0)


def prepare_stack(stack: Any, style: StyleInput, axis: int = 0, **options: Any) -> tuple[Any, Any, Options]:
    """Validate a stack run before any work: frames, style(s) and options (ValueError naming the fix)."""
    opts = Options.from_kwargs(**options)
    frames = stack_frames(stack, axis, opts.content_limits)
    first = frames[0]
    opts.check_size(first.shape[:2])
    check_weights_path(opts.weights)
    several = isinstance(style, (list, tuple))
    styles = load_styles(style, first.shape[:2], opts)
    shapes = [s.shape[:2] for s in styles]
    regions = opts.regions
    per_frame = regions is not None and np.ndim(regions) == 3
    if per_frame:  # every frame's labels, then frame 0's as one image's (with style_blend and the rest)
        regions = _check_region_stack(regions, len(frames), first.shape[:2], len(styles), opts)
        opts.regions = regions[0]
    _check_controls(first, shapes, opts)  # one label image: the same regions in every frame
    if per_frame:
        opts.regions = regions
    if isinstance(opts.init, np.ndarray):
        to_rgb_float(opts.init, name="init")
    check_init(opts)
    if opts.mask is not None:  # one (H, W) mask for every frame, or (N, H, W): one per frame
        from napari_nst.core.image.masks import check_mask_stack

        working = opts.level_shapes(first.shape[:2])[-1]
        opts.mask = check_mask_stack(opts.mask, len(frames), first.shape[:2], working)
    return frames, (styles if several else styles[0]), opts


def _check_region_stack(regions: Any, n: int, shape: tuple[int, int], n_styles: int, opts: Options) -> np.ndarray:
    """``regions`` (N, H, W): one label image per frame (frame axis first), e.g. a Labels layer of
    the stack's dims; OptionError naming the fix otherwise."""
    from napari_nst.core.errors import OptionError
    from napari_nst.core.objective.regions import check_mapping, check_regions, check_styled

    arr = np.asarray(regions)
    if arr.shape[0] != n:
        raise OptionError(
            f"regions has {arr.shape[0]} label images (shape {arr.shape}) but the stack has {n} frames; give "
            "one per frame (frame axis first), or one (H, W) label image for every frame"
        )
    mapping = check_mapping(opts.region_styles, n_styles)
    check_regions(arr[0], shape)  # dtype and frame size
    for t in range(n):
        try:
            check_styled(arr[t], mapping)
        except OptionError as exc:
            raise OptionError(f"frame {t}: {exc}") from None
    return arr
