"""The engine's options, each declared once: name, default, documentation, bounds, validation.

Every field of :class:`Options` carries its metadata (:func:`napari_nst.core.spec.option`); the
command line's flags, the widget's form and the documentation's option table are generated from
:func:`specs` (no torch here).
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from functools import cache
from typing import Any

import numpy as np

from napari_nst.core.encoder.layer_names import check_layers, min_side, model_in_file
from napari_nst.core.errors import OptionError
from napari_nst.core.image.arrays import resized_shape
from napari_nst.core.spec import Spec, docstring_help, option

CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "preview")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "float32", "bfloat16")
MODELS = ("vgg19", "vgg16")
POOLINGS = ("max", "avg")
STYLE_LOSSES = ("gram", "wasserstein", "sliced")
COLOUR_MODES = ("luminance", "histogram")
BLEND_MODES = ("balanced", "linear")
MAX_SIZE = 16384
MAX_STEPS = 10_000_000
MAX_SEED = 2**31 - 1  # a Qt spin box's int range, so the widget offers every seed the API takes
#: options only a stack run uses (``iter_stylize_stack``; the command line offers them on
#: ``stylize-stack`` only)
STACK_OPTIONS = ("temporal_weight", "frame_steps")

#: size and steps when left at None ("by device"): a run of about a minute on a 2-core CPU,
#: the paper-like run on a GPU
CPU_SIZE, CPU_STEPS = 256, 100
GPU_SIZE, GPU_STEPS = 512, 300
_SIZE_BY_DEVICE = f"by device: {CPU_SIZE} on a CPU, {GPU_SIZE} on a GPU"
_STEPS_BY_DEVICE = f"by device: {CPU_STEPS} on a CPU, {GPU_STEPS} on a GPU"
#: ``scales=None``: single scale up to AUTO_SINGLE_MAX px; above, as many levels as put the coarsest
#: within (AUTO_COARSEST / 2, AUTO_COARSEST], so that the painting's strokes keep their size relative
#: to the picture as the output grows: every size has the large strokes of a run at that size (the
#: network's receptive fields are fixed in pixels; single scale at 1024 px paints a fine texture
#: with a pale tint: docs/controls.md#output-size-and-stroke-size, python -m benchmarks strength)
AUTO_SINGLE_MAX = 256
AUTO_COARSEST = 256
_SCALES_BY_SIZE = (
    f"by size: 1 up to {AUTO_SINGLE_MAX} px; above, levels from {AUTO_COARSEST // 2 + 1}-{AUTO_COARSEST} px up"
)


@dataclass
class Options:
    """Settings of one style-transfer run. Every field is a keyword of ``stylize``.

    Attributes
    ----------
    size : int or None
        Long edge of the output in pixels; the content's aspect ratio is kept. None: by device,
        256 on a CPU (a run of about a minute), 512 on a GPU.
    steps : int or None
        Objective evaluations (forward + backward passes) in all, over all scales, so that cost
        compares across optimisers. None: by device, 100 on a CPU, 300 on a GPU.
    style_weight : float or None
        The style term's weight ``b`` in ``a * L_content + b * L_style``. None: automatic,
        ``b = 5 / L_style(0)`` where ``L_style(0)`` is the style loss of an image whose Gram
        matrices are zero, so that ``b * L_style`` is a relative Gram error. The automatic values
        do not depend on the network or the size; every progress record reports them (``weights``).
    content_weight : float or None
        The content term's weight ``a``. None: automatic, ``a = 1 / (1/2 ||P||^2)`` where P are
        the content features, so that ``a * L_content`` is the relative content error.
    model : str or None
        The network: ``vgg19`` (the paper's) or ``vgg16``. None: what the weights file holds,
        else vgg19.
    weights : str or None
        The network's weights, a ``.pth`` state dict (full, or ``features.*`` keys only). None:
        ``$NAPARI_NST_WEIGHTS`` if set, else torchvision's ImageNet weights (downloaded once).
    device : str
        Where to run: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
    seed : int or None
        Seed for the noise initialisation and anything random; fixed = repeatable on the CPU.
        None: random.
    content_layers : tuple of str
        Layers for ``L_content`` (``relu4_2`` in the paper), comma-separated as text.
    style_layers : tuple of str
        Layers for ``L_style``, comma-separated as text.
    style_layer_weights : tuple of float or None
        The weight ``w_l`` of each style layer. None: equal weights that sum to 1.
    pooling : str
        ``max`` (torchvision's network) or ``avg`` (the paper's recommendation).
    style_loss : str
        How the pastiche's style statistics are compared with the style's at each style layer:
        ``gram`` (the paper's: Gram matrices), ``wasserstein`` (the 2-Wasserstein distance of
        the Gaussians fitted to the features: their means and covariances) or ``sliced`` (the
        sliced Wasserstein distance: sorted random projections of the features, Heitz et al.
        2021). docs/controls.md shows the three side by side; ``sliced`` does not work with tiles.
    optimizer : str
        ``lbfgs`` (the paper's; one evaluation per step, with a trust region and backtracking
        against divergence) or ``adam``.
    init : str or array
        Where the pastiche starts: ``content``, ``noise``, ``preview`` (the instant preview of a
        feed-forward network, ``napari_nst.preview``; needs ``napari-nst[preview]``), or an
        image array such as an earlier pastiche (on the command line, an image file).
    scales : int or None
        Coarse-to-fine levels, each twice the size of the one before and starting from the
        previous level's result, most evaluations at the small levels (``engine.split_steps``);
        1 = single scale. None: by size, 1 up to 256 px; above, as many levels as make the
        coarsest 129-256 px (1024 px: 256, 512, 1024), so that the painting's strokes keep their
        size relative to the picture as the output grows (single scale at 1024 px paints a fine
        texture; docs/controls.md). At most this
        many: levels smaller than the network's minimum, or more levels than ``steps``, are
        dropped. A level starts from the content's fine detail plus the change the coarser level
        made (``c + up(x - down(c))``, not in the paper); the coarser result merely enlarged made
        the 1024 px level stall.
    pyramid : int
        Coarser layers (each half the size of the one below) the optimiser moves the pastiche
        through, added on top of its pixels; 0 = the pixels themselves, as in the paper. Same
        objective, fewer evaluations to reach a given value (docs/benchmarks.md).
    style_scale : float or tuple of float
        At each level the style image is resized to the level's long edge times ``style_scale``,
        so that its strokes follow the output's size: below 1 the strokes come out larger, above
        1 smaller. One number for every style image, or one per style image (``style`` a list;
        as text ``1,0.5``).
    tv_weight : float
        Weight of a total-variation term (not in the paper; 0 = off).
    precision : str
        The network's number format: ``auto`` (bfloat16 where the device runs it fast, else
        float32), ``float32`` or ``bfloat16``. Targets, Gram matrices and losses are always float32.
    preview_every : int
        Copy the image into every n-th progress record (others carry ``image=None``).
    preview_interval : float
        Seconds: copy the image into a record only if at least this long has passed since the
        last record that had one (0 = no time limit). The last record of each level always
        carries the image.
    temporal_weight : float or None
        Stacks only: weight of the temporal term that keeps frame t near frame t-1's pastiche
        carried along the optical flow (Ruder, Dosovitskiy and Brox 2016: mean squared difference over the pixels
        where the flow is reliable, so it does not depend on the size). None: automatic
        (TEMPORAL_BALANCE in core/stack/engine.py, measured in docs/stacks.md); 0 = frames independent.
    frame_steps : int or None
        Stacks only: evaluations for each frame after the first, which starts from the previous
        pastiche carried along the flow. None: about a third of ``steps``.
    content_limits, style_limits : (lo, hi) or None
        Values mapped to 0 and 1, such as a napari layer's contrast limits. None: by dtype.
    style_blend : tuple of float or None
        One weight per style image (``style`` a list), >= 0, normalised to sum 1; the Gram
        targets are blended ``A_l = sum_i w_i A_l(i)``. None: equal weights.
    style_blend_mode : str
        How the weights blend the styles' targets: ``balanced`` (each weight divided by the square
        root of how far a short run with that style alone stays from it, measured at 64 px before
        the run, so that 50/50 lands halfway between the two styles as each is reached alone; not
        in the papers) or ``linear`` (the weights themselves, ``A_l = sum_i w_i A_l(i)``,
        neural-style's: the style that is harder to reach takes over).
    preserve_color : str or None
        Keep the content's colours: ``luminance`` (the style transferred on luminance only; the
        pastiche keeps the content's chroma) or ``histogram`` (the style's colours matched to the
        content's mean and covariance first), as in Gatys and colleagues' 2017 follow-up paper.
        None: off, the paper's.
    style_strength : float
        Multiplies the style weight ``b`` (automatic or given): 1 = the automatic balance,
        0.1 = much less style, 10 = much more.
    regions : int array or None
        A label image of the content's (H, W) (a napari Labels layer's data; on the command line
        a label image file) whose labels choose the style of each region (see ``region_styles``).
        For a stack also (N, H, W), one label image per frame (a Labels layer of the stack's dims;
        on the command line a multi-page TIFF). None: the style everywhere.
    region_styles : dict or None
        Label -> style index (0 = the first style) or None (no style: keep the content there),
        as text ``1:0,2:none``. Labels not in it, 0 included, get the blend of all styles.
        None: every label gets the blend.
    tile_size : int or None
        Evaluate the objective in square tiles of this many pixels (a halo of context included),
        so that the network's memory is bounded by the tile, not the image (docs/tiles.md). The
        objective is still the whole image's (the tiles' Gram matrices summed), exact up to the
        halo's edge effects. None: the whole image at once, or, when that
        does not fit the free memory (or ``max_memory``), the largest tile size that does. At least
        96 px (vgg up to relu5_1) and smaller than the image.
    max_memory : int or str or None
        The most memory the run may plan to use: bytes, or text like ``8GB`` or ``512MiB``. A
        larger float32 CPU run first makes napari-nst's Winograd kernels at every call instead of
        keeping them (slightly slower) if that fits, else it is tiled (see ``tile_size``). None:
        the free memory.
    style_regions : list of int arrays or None
        Which part of each style image supplies each region's style. Guided Gram matrices on
        the style side (Gatys and colleagues' 2017 paper): one label image per style image, of
        its (H, W) (None for a style image used whole; one array when there is one style). Content
        pixels labelled L in ``regions`` take their style from the pixels labelled L in their
        style image; a style image without label L gives all of itself. Needs ``regions``. On
        the command line, label image files separated by commas (``none`` for a style image
        used whole). None: every style image used whole.
    mask : array or None
        Restyle only part of the image: an (H, W) boolean or label image of the content's size
        (nonzero = restyle; in napari a Labels or Shapes layer; on the command line an image
        file). The other pixels stay exactly those of the start image (``init`` when it is an
        image, such as the pastiche Continue repaints, else the content); the mask's border is
        feathered inwards over a few pixels (docs/controls.md). For a stack also (N, H, W), one
        per frame (each frame keeps its content outside). None: every pixel.
    """

    size: int | None = option(None, label="Size (px)", kind="int", lo=1, hi=MAX_SIZE, step=32, none=_SIZE_BY_DEVICE)
    steps: int | None = option(None, label="Steps", kind="int", lo=1, hi=MAX_STEPS, step=50, none=_STEPS_BY_DEVICE)
    style_weight: float | None = option(
        None, label="Style weight", kind="auto_float", lo=0, none="automatic", advanced=True
    )
    content_weight: float | None = option(
        None, label="Content weight", kind="auto_float", lo=0, none="automatic", advanced=True
    )
    model: str | None = option(
        None, label="Network", kind="choice", choices=MODELS, none="from the weights file, else vgg19"
    )
    weights: str | None = option(
        None, label="Weights", kind="path", none="$NAPARI_NST_WEIGHTS, else torchvision's ImageNet weights"
    )
    device: str = option("auto", label="Device", kind="device", choices=DEVICES)
    seed: int | None = option(0, label="Seed", kind="seed", lo=0, hi=MAX_SEED, none="random")
    content_layers: tuple[str, ...] = option(CONTENT_LAYERS, label="Content layers", kind="names", advanced=True)
    style_layers: tuple[str, ...] = option(STYLE_LAYERS, label="Style layers", kind="names", advanced=True)
    style_layer_weights: tuple[float, ...] | None = option(
        None, label="Layer weights", kind="floats", lo=0, advanced=True, none="equal"
    )
    pooling: str = option("max", label="Pooling", kind="choice", choices=POOLINGS, advanced=True)
    style_loss: str = option("gram", label="Style loss", kind="choice", choices=STYLE_LOSSES, advanced=True)
    optimizer: str = option("lbfgs", label="Optimiser", kind="choice", choices=OPTIMIZERS, advanced=True)
    init: str | np.ndarray = option("content", label="Start from", kind="init", choices=INITS, advanced=True)
    scales: int | None = option(None, label="Scales", kind="int", lo=1, hi=8, advanced=True, none=_SCALES_BY_SIZE)
    pyramid: int = option(4, label="Pyramid", kind="int", lo=0, hi=12, advanced=True)
    style_scale: float | tuple[float, ...] = option(
        1.0, label="Style scale", kind="scales", lo=0.05, hi=8.0, step=0.05, advanced=True
    )
    tv_weight: float = option(0.0, label="TV weight", kind="float", lo=0, advanced=True)
    precision: str = option("auto", label="Precision", kind="choice", choices=PRECISIONS, advanced=True)
    preview_every: int = option(1, label="Preview every", kind="int", lo=1, hi=MAX_STEPS, form=False, cli=False)
    preview_interval: float = option(0.0, label="Preview interval (s)", kind="float", lo=0, form=False, cli=False)
    temporal_weight: float | None = option(
        None, label="Temporal weight", kind="auto_float", lo=0, advanced=True, none="automatic"
    )
    frame_steps: int | None = option(
        None,
        label="Steps per frame",
        kind="int",
        lo=1,
        hi=MAX_STEPS,
        step=10,
        advanced=True,
        none="about a third of steps",
    )
    content_limits: tuple[float, float] | None = option(
        None, label="Content limits", kind="limits", none="by dtype", form=False
    )
    style_limits: tuple[float, float] | None = option(
        None, label="Style limits", kind="limits", none="by dtype", form=False
    )
    style_blend: tuple[float, ...] | None = option(
        None, label="Style blend", kind="floats", lo=0, none="equal", form=False
    )
    style_blend_mode: str = option(
        "balanced", label="Blend mode", kind="choice", choices=BLEND_MODES, advanced=True, form=False
    )
    preserve_color: str | None = option(
        None, label="Keep colours", kind="choice", choices=COLOUR_MODES, none="off (the paper's: the style's colours)"
    )
    style_strength: float = option(1.0, label="Style strength", kind="log_float", lo=0.1, hi=10.0)
    regions: np.ndarray | None = option(None, label="Regions", kind="regions", none="no regions", form=False)
    region_styles: dict[int, int | None] | None = option(
        None, label="Region styles", kind="mapping", none="the blend everywhere", form=False
    )
    tile_size: int | None = option(
        None, label="Tile size (px)", kind="int", lo=64, hi=MAX_SIZE, step=32, none="automatic", advanced=True
    )
    max_memory: int | None = option(None, label="Max memory", kind="bytes", none="the free memory", advanced=True)
    style_regions: list[np.ndarray | None] | None = option(
        None, label="Style regions", kind="style_regions", none="the style images used whole", form=False
    )
    mask: np.ndarray | None = option(None, label="Restyle only", kind="mask", none="every pixel", form=False)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Options:
        """Validate keyword options (unknown names and bad values raise :class:`OptionError`)."""
        known = cls.names()
        for key in kwargs:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise OptionError(f"unknown option {key!r}{hint} Options are: {', '.join(known)}")
        opts = cls(**kwargs)
        opts.validate()
        return opts

    @property
    def layers(self) -> list[str]:
        """Content and style layers, without repeats."""
        return list(dict.fromkeys([*self.content_layers, *self.style_layers]))

    def for_device(self, gpu: bool) -> Options:
        """A copy with ``size`` and ``steps`` filled in where they are None ("by device")."""
        return replace(
            self,
            size=self.size if self.size is not None else (GPU_SIZE if gpu else CPU_SIZE),
            steps=self.steps if self.steps is not None else (GPU_STEPS if gpu else CPU_STEPS),
        )

    @property
    def network(self) -> str:
        """The network the layer checks use: ``model``, or vgg19 while it is still to be read from
        the weights file (both networks name and pool their layers alike up to relu5_1)."""
        return self.model or "vgg19"

    def level_shapes(self, shape: tuple[int, int]) -> list[tuple[int, int]]:
        """Working shapes of the coarse-to-fine levels the engine uses for a content of ``shape``.

        With ``size``/``steps`` still None (by device), the CPU's values: the smaller size, so a
        check made before the device is known is the stricter one.
        """
        size, steps = self.size or CPU_SIZE, self.steps or CPU_STEPS
        need = min_side(self.network, self.layers)
        return level_shapes(shape, size, effective_levels(shape, size, self.levels_for(size), steps, need))

    def levels_for(self, size: int) -> int:
        """``scales``, or the automatic number of levels for a long edge of ``size`` px."""
        return self.scales if self.scales is not None else auto_scales(size)

    def scale_of(self, index: int = 0) -> float:
        """Style image ``index``'s ``style_scale`` (the one number, or its own of the list)."""
        if isinstance(self.style_scale, tuple):
            return float(self.style_scale[index])
        return float(self.style_scale)

    def _scale_name(self, index: int) -> str:
        return f"style_scale[{index}]" if isinstance(self.style_scale, tuple) else "style_scale"

    def check_scales(self, n_styles: int) -> None:
        """OptionError unless ``style_scale`` is one number or has one value per style image."""
        if isinstance(self.style_scale, tuple) and len(self.style_scale) != n_styles:
            many = "is 1 style image" if n_styles == 1 else f"are {n_styles} style images"
            raise OptionError(
                f"style_scale has {len(self.style_scale)} values but there {many}; give one number for "
                f"all, or one per style image (e.g. {','.join(['1'] * n_styles)})"
            )

    def style_shape(
        self, style_shape: tuple[int, int], level_shape: tuple[int, int], index: int = 0
    ) -> tuple[int, int]:
        """Style image ``index``'s working shape at a level of working shape ``level_shape``."""
        return resized_shape(style_shape, max(1, round(max(level_shape) * self.scale_of(index))))

    def check_size(self, shape: tuple[int, int]) -> None:
        """Raise OptionError if the coarsest working image is too small for the network."""
        _check_size(self, shape)

    def check_tiles(self, shape: tuple[int, int], styles: int = 1) -> None:
        """Raise OptionError if ``tile_size`` does not suit a content of ``shape`` (or the styles)."""
        if self.tile_size is None:
            return
        from napari_nst.core.compute.memory import check_tile_size, tiles_supported

        check_tile_size(self.tile_size, self.level_shapes(shape)[-1], self.network, self.layers)
        why_not = tiles_supported(self, styles)
        if why_not:
            raise OptionError(f"tile_size={self.tile_size}: {why_not}; leave tile_size empty")

    def check_style_size(self, content_shape: tuple[int, int], style_shape: tuple[int, int], index: int = 0) -> None:
        """Raise OptionError if style image ``index``, resized as the engine resizes it at each
        level (:meth:`style_shape`), is too large, or too small for the network at the coarsest level."""
        _check_style_size(self, content_shape, style_shape, index)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly settings (an init array is summarised by its shape)."""
        d = asdict(self)
        if isinstance(self.init, np.ndarray):
            d["init"] = f"array{tuple(self.init.shape)}"
        if self.regions is not None:
            d["regions"] = f"labels{tuple(np.shape(self.regions))}"
        if self.style_regions is not None:
            d["style_regions"] = [None if r is None else f"labels{tuple(np.shape(r))}" for r in self.style_regions]
        if self.mask is not None:
            d["mask"] = f"mask{tuple(np.shape(self.mask))}"
        return d

    # ------------------------------------------------------------------ validation

    def validate(self) -> None:
        """Check and normalise every field in place (raises :class:`OptionError` naming the fix)."""
        for sp in specs():
            value = getattr(self, sp.name)
            if value is None and sp.nullable:
                continue
            setattr(self, sp.name, _CHECKS[sp.kind](value, sp))
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(self.style_layers):
            raise OptionError(
                f"style_layer_weights has {len(self.style_layer_weights)} values but style_layers has "
                f"{len(self.style_layers)}; give one weight per style layer"
            )
        check_layers(self.network, self.content_layers, "content layer")
        check_layers(self.network, self.style_layers, "style layer")
        if self.style_regions is not None and self.style_loss != "gram":
            raise OptionError(
                f"style_regions works with style_loss='gram' only (not {self.style_loss!r}); "
                "use style_loss='gram', or leave style_regions empty (regions still work)"
            )


def network_used(opts: Options) -> str:
    """The network a run builds, for messages: ``model``, else the one the weights file holds
    (read without torch: :func:`napari_nst.core.encoder.layer_names.model_in_file`), else vgg19."""
    if opts.model is not None:
        return opts.model
    weights = opts.weights or os.environ.get("NAPARI_NST_WEIGHTS") or None
    return (model_in_file(weights) if weights else None) or "vgg19"


def _check_size(opts: Options, shape: tuple[int, int]) -> None:
    need = min_side(opts.network, opts.layers)
    shapes = opts.level_shapes(shape)
    h, w = shapes[0]
    if min(h, w) < need:
        where = "the coarsest level" if len(shapes) > 1 else "the output"
        raise OptionError(
            f"{where} would be {h}x{w} px, but {network_used(opts)} up to {opts.layers[-1]} needs at least "
            f"{need} px on each side: increase size (now {opts.size or CPU_SIZE})"
            + (f" or use fewer scales (now {len(shapes)})" if len(shapes) > 1 else "")
            + " or crop the content to a less elongated shape"
        )


def _check_style_size(opts: Options, content_shape: tuple[int, int], style_shape: tuple[int, int], index: int) -> None:
    need = min_side(opts.network, opts.layers)
    shapes = opts.level_shapes(content_shape)
    h, w = opts.style_shape(style_shape, shapes[0], index)
    big = opts.style_shape(style_shape, (opts.size or GPU_SIZE,) * 2, index)
    name, scale = opts._scale_name(index), opts.scale_of(index)
    if max(big) > MAX_SIZE:
        raise OptionError(
            f"{name}={scale:g} would make the style image {big[0]}x{big[1]} px; the limit is "
            f"{MAX_SIZE} px on the long edge: lower style_scale"
        )
    if min(h, w) < need:
        where = "at the coarsest level" if len(shapes) > 1 else "at this size"
        raise OptionError(
            f"the style image would be {h}x{w} px {where}, but {network_used(opts)} up to {opts.layers[-1]} needs "
            f"at least {need} px on each side: increase style_scale ({name} now {scale:g}) or size (now "
            f"{opts.size or CPU_SIZE}), or crop the style image to a less elongated shape"
        )


@cache
def specs() -> tuple[Spec, ...]:
    """Every option's :class:`Spec`, in declaration order (the widget's form order)."""
    docs = docstring_help(Options.__doc__ or "")
    out = []
    for f in fields(Options):
        meta = f.metadata.get("napari_nst")
        if meta is not None:
            out.append(Spec(name=f.name, default=f.default, help=docs.get(f.name, ""), **meta))
    return tuple(out)


def spec(name: str) -> Spec:
    """The :class:`Spec` of option ``name`` (KeyError if there is none)."""
    for sp in specs():
        if sp.name == name:
            return sp
    raise KeyError(name)


def level_shapes(shape: tuple[int, int], size: int, scales: int) -> list[tuple[int, int]]:
    """Working shapes, coarse to fine, each level twice the one before; the last has long edge ``size``."""
    return [resized_shape(shape, max(1, round(size / 2 ** (scales - 1 - k)))) for k in range(scales)]


def auto_scales(size: int) -> int:
    """Levels for ``scales=None``: 1 up to AUTO_SINGLE_MAX px; above, the coarsest level within
    (AUTO_COARSEST / 2, AUTO_COARSEST] px, each level twice the one before."""
    if size <= AUTO_SINGLE_MAX:
        return 1
    levels = 1
    while size > AUTO_COARSEST * 2 ** (levels - 1):
        levels += 1
    return levels


def effective_levels(shape: tuple[int, int], size: int, scales: int, steps: int, need: int) -> int:
    """Coarse-to-fine levels actually used: at most ``scales``, no more than ``steps``, and only
    levels whose shorter side is at least ``need`` px (the network's minimum); at least 1."""
    levels = max(1, min(scales, steps))
    while levels > 1 and min(level_shapes(shape, size, levels)[0]) < need:
        levels -= 1
    return levels


#: coarse-to-fine (``Options.scales``): each level gets this fraction of the evaluations of the
#: level before it (coarser, a quarter of the pixels), so that most evaluations are cheap and a
#: few refine the full size (measured at 1024 px in docs/coarse_to_fine.md)
LEVEL_STEP_RATIO = 1 / 3


def split_steps(steps: int, scales: int) -> list[int]:
    """Evaluations per level, coarse to fine: one each, and the rest in proportion ``1, r, r^2, ...``
    with ``r = LEVEL_STEP_RATIO`` (largest remainders rounded up, coarser first), so that they add
    up to ``steps`` and never grow from one level to the next (300 over two levels: 225 + 75;
    over three: 207 + 69 + 24)."""
    if scales < 1 or steps < scales:
        raise OptionError(f"steps={steps} is too few for scales={scales}; give at least {scales} steps")
    weights = [LEVEL_STEP_RATIO**k for k in range(scales)]
    shares = [(steps - scales) * w / sum(weights) for w in weights]
    counts = [1 + math.floor(x) for x in shares]
    by_remainder = sorted(range(scales), key=lambda k: (-(shares[k] - math.floor(shares[k])), k))
    for k in by_remainder[: steps - sum(counts)]:
        counts[k] += 1
    return counts


def _int(v: Any, sp: Spec) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        else:
            raise OptionError(f"{sp.name} must be an integer, got {v!r}")
    return int(_in_range(int(v), sp))


def _in_range(v: float, sp: Spec) -> float:
    lo = -np.inf if sp.lo is None else sp.lo
    hi = np.inf if sp.hi is None else sp.hi
    if not lo <= v <= hi:
        fix = f"lower {sp.name}" if v > hi else f"raise {sp.name}"
        if sp.hi is None:
            raise OptionError(f"{sp.name} must be a finite number >= {_num(lo)}, got {v!r}")
        raise OptionError(f"{sp.name} must be between {_num(lo)} and {_num(hi)}, got {_num(v)}: {fix}")
    return v


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e18 else f"{v:g}"


def _float(v: Any, sp: Spec) -> float:
    if isinstance(v, bool):
        raise OptionError(f"{sp.name} must be a number, got {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise OptionError(f"{sp.name} must be a number, got {v!r}") from None
    if not np.isfinite(f):
        raise OptionError(f"{sp.name} must be a finite number, got {v!r}")
    if f > _FLOAT32_MAX:  # the objective is float32: a larger factor can only give inf or NaN
        raise OptionError(f"{sp.name} must be at most {_FLOAT32_MAX:.4g} (the largest float32), got {v!r}")
    return _in_range(f, sp)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _seq(v: Any, name: str) -> tuple[Any, ...]:
    if isinstance(v, str):
        v = [s.strip() for s in v.split(",") if s.strip()]
    try:
        return tuple(v)
    except TypeError:
        raise OptionError(f"{name} must be a list, got {v!r}") from None


def _names(v: Any, sp: Spec) -> tuple[str, ...]:
    out = _seq(v, sp.name)
    if not out or not all(isinstance(s, str) for s in out):
        raise OptionError(f"{sp.name} must be a non-empty list of layer names like 'relu4_2', got {v!r}")
    return out


def _floats(v: Any, sp: Spec) -> tuple[float, ...]:
    return tuple(_float(x, sp) for x in _seq(v, sp.name))


def _choice(v: Any, sp: Spec) -> Any:
    if v not in (sp.choices or ()):
        raise OptionError(f"{sp.name} must be one of {sp.choices}, got {v!r}")
    return v


def _device(v: Any, sp: Spec) -> str:
    if not isinstance(v, str) or not (v in DEVICES or (v.startswith("cuda:") and v[5:].isdigit())):
        raise OptionError(f"device must be one of {DEVICES} or 'cuda:N', got {v!r}")
    return v


def _init(v: Any, sp: Spec) -> Any:
    if isinstance(v, str):
        return _choice(v, sp)
    if isinstance(v, np.ndarray):
        return v
    try:
        return np.asarray(v)
    except Exception:
        raise OptionError(f"init must be one of {INITS} or an image array") from None


def _path(v: Any, sp: Spec) -> str | None:
    if not isinstance(v, (str, os.PathLike)):
        raise OptionError(f"{sp.name} must be None or a file path, got {type(v).__name__}")
    return os.fspath(v) or None


def _regions(v: Any, sp: Spec) -> np.ndarray:
    arr = np.asarray(v)
    if arr.ndim not in (2, 3):  # (N, H, W): one label image per frame of a stack (api.prepare_stack)
        raise OptionError(
            f"regions must be a 2-D label image (H, W) of the content's size (for a stack also (N, H, W), one per "
            f"frame), got shape {arr.shape}"
        )
    return arr  # dtype and shape against the content: regions.check_regions (api.prepare)


def _mask(v: Any, sp: Spec) -> np.ndarray:
    if isinstance(v, (str, os.PathLike)):
        raise OptionError(
            "mask is a file name; read it first (napari_nst.core.image.masks.read_mask; the command line does)"
        )
    arr = np.asarray(v)
    if arr.ndim not in (2, 3):  # (N, H, W): one mask per frame of a stack (api.prepare_stack)
        raise OptionError(
            f"mask must be a 2-D (H, W) boolean or label image of the content's size (for a stack also (N, H, W), "
            f"one per frame), got shape {arr.shape}"
        )
    return arr  # dtype, shape and emptiness against the content: masks.check_mask (api.prepare)


def _mapping(v: Any, sp: Spec) -> dict[int, int | None]:
    if isinstance(v, str):
        v = sp.parse(v)
    if not isinstance(v, dict):
        raise OptionError(
            f"region_styles must be a dict {{label: style index or None}} or text like '1:0,2:none', got {v!r}"
        )
    out: dict[int, int | None] = {}
    for k, s in v.items():
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise OptionError(f"region_styles: labels must be integers, got {k!r}")
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0):
            raise OptionError(f"region_styles: label {k} maps to {s!r}; use a style index (0, 1, ...) or None")
        out[int(k)] = None if s is None else int(s)
    return out


def _bytes(v: Any, sp: Spec) -> int:
    from napari_nst.core.compute.memory import parse_bytes

    return parse_bytes(v)


def _scales(v: Any, sp: Spec) -> float | tuple[float, ...]:
    """One number (every style) or a non-empty list of numbers (one per style), each in bounds."""
    if isinstance(v, str):
        v = sp.parse(v)
    if isinstance(v, (list, tuple, np.ndarray)):
        out = tuple(_float(x, sp) for x in v)
        if not out:
            raise OptionError(f"{sp.name} must be a number or a non-empty list of numbers (one per style), got {v!r}")
        return out
    return _float(v, sp)


def _style_regions(v: Any, sp: Spec) -> list[np.ndarray | None]:
    """One label image (one style) or a list of them, None for a style image used whole; dtype
    and shapes against the style images: regions.check_style_regions (api.prepare)."""
    if isinstance(v, str):
        v = sp.parse(v)
    items = [v] if isinstance(v, np.ndarray) else v
    if not isinstance(items, (list, tuple)) or not items:
        raise OptionError(
            f"style_regions must be a label image or a list with one per style image (None for a "
            f"style image used whole), got {type(v).__name__}"
        )
    out: list[np.ndarray | None] = []
    for i, r in enumerate(items):
        if r is None:
            out.append(None)
            continue
        if isinstance(r, (str, os.PathLike)):
            raise OptionError(f"style_regions[{i}] is a file name; read it first (the command line does)")
        arr = np.asarray(r)
        if arr.ndim != 2:
            raise OptionError(
                f"style_regions[{i}] must be a 2-D label image (H, W) of style image {i}, got shape {arr.shape}"
            )
        out.append(arr)
    return out


def _as_is(v: Any, sp: Spec) -> Any:  # limits: checked (with the image) by images.to_rgb_float
    return v


_CHECKS = {
    "int": _int,
    "seed": _int,
    "float": _float,
    "auto_float": _float,
    "names": _names,
    "floats": _floats,
    "choice": _choice,
    "device": _device,
    "init": _init,
    "path": _path,
    "limits": _as_is,
    "log_float": _float,
    "regions": _regions,
    "mapping": _mapping,
    "bytes": _bytes,
    "scales": _scales,
    "style_regions": _style_regions,
    "mask": _mask,
}
