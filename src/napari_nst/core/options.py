"""The engine's options: names, defaults, documentation and validation (no torch here).

The widget and the command line read their defaults and help texts from :class:`Options`.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional, Union

import numpy as np

from .errors import OptionError
from .images import resized_shape
from .layers import check_layers, min_side

CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "float32", "bfloat16")
MAX_SIZE = 16384


@dataclass
class Options:
    """Settings of one style-transfer run. Every field is a keyword of ``stylize``.

    Attributes
    ----------
    size : int
        Long edge of the output in pixels (aspect ratio of the content kept).
    steps : int
        Objective evaluations (forward + backward passes) in all, over all scales, so that cost
        compares across optimisers.
    content_weight : float or None
        ``a`` in ``a * L_content + b * L_style``. None: automatic, ``a = 1 / (1/2 ||P||^2)`` where
        P are the content features, so that ``a * L_content`` is the relative content error.
    style_weight : float or None
        ``b``. None: automatic, ``b = 50 / L_style(0)`` where ``L_style(0)`` is the style loss of
        an image whose Gram matrices are zero, so that ``b * L_style`` is a relative Gram error.
        The automatic values are network- and size-independent; they are reported in every
        progress record (``weights``).
    tv_weight : float
        Weight of a total-variation term (not in the paper; 0 = off).
    content_layers : tuple of str
        Layers for ``L_content`` (``relu4_2`` in the paper).
    style_layers : tuple of str
        Layers for ``L_style``.
    style_layer_weights : tuple of float or None
        ``w_l`` for each style layer; None = equal weights that sum to 1.
    model : str
        ``vgg19`` (the paper's) or ``vgg16``.
    weights : str or None
        None: ``$NAPARI_NST_WEIGHTS`` if set, else torchvision's ImageNet weights (downloaded once);
        or the path of a ``.pth`` state dict (full, or ``features.*`` keys only).
    pooling : str
        ``max`` (torchvision's network) or ``avg`` (the paper's recommendation).
    optimizer : str
        ``lbfgs`` (the paper's; one evaluation per step, with a trust region and backtracking
        against divergence) or ``adam``.
    init : str or array
        ``content``, ``noise``, or an image array to start from (e.g. an earlier pastiche).
    scales : int
        Coarse-to-fine levels, each twice the size of the one before; 1 = single scale. At most
        this many: levels smaller than the network's minimum, or more levels than ``steps``, are
        dropped. Coarse-to-fine did not pay on the CPU benchmark (docs/performance.md), so the
        default is 1.
    pyramid : int
        The optimiser moves the pastiche through this many coarser layers (each half the size of
        the one below) added on top of its pixels; 0 = the pixels themselves, as in the paper.
        Same objective, fewer evaluations to reach a given value (docs/performance.md).
    style_scale : float
        The style image is resized to ``size * style_scale`` on its long edge.
    device : str
        ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
    precision : str
        ``auto`` (bfloat16 network where the device runs it fast; targets, Gram matrices and
        losses always float32),
        ``float32`` or ``bfloat16``.
    seed : int or None
        Seed for the noise initialisation and anything random; fixed = repeatable on the CPU.
    preview_every : int
        Copy the image into every n-th progress record (others carry ``image=None``).
    content_limits, style_limits : (lo, hi) or None
        Values mapped to 0 and 1 (a napari layer's contrast limits); None = by dtype.
    """

    size: int = 512
    steps: int = 300
    content_weight: Optional[float] = None
    style_weight: Optional[float] = None
    tv_weight: float = 0.0
    content_layers: tuple[str, ...] = CONTENT_LAYERS
    style_layers: tuple[str, ...] = STYLE_LAYERS
    style_layer_weights: Optional[tuple[float, ...]] = None
    model: str = "vgg19"
    weights: Optional[str] = None
    pooling: str = "max"
    optimizer: str = "lbfgs"
    init: Union[str, np.ndarray] = "content"
    scales: int = 1
    pyramid: int = 4
    style_scale: float = 1.0
    device: str = "auto"
    precision: str = "auto"
    seed: Optional[int] = 0
    preview_every: int = 1
    content_limits: Optional[tuple[float, float]] = None
    style_limits: Optional[tuple[float, float]] = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "extra"]

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

    def level_shapes(self, shape: tuple[int, int]) -> list[tuple[int, int]]:
        """Working shapes of the coarse-to-fine levels the engine uses for a content of ``shape``."""
        need = min_side(self.model, self.layers)
        return level_shapes(shape, self.size, effective_levels(shape, self.size, self.scales, self.steps, need))

    def check_size(self, shape: tuple[int, int]) -> None:
        """Raise OptionError if the coarsest working image is too small for the network."""
        need = min_side(self.model, self.layers)
        shapes = self.level_shapes(shape)
        h, w = shapes[0]
        if min(h, w) < need:
            where = "the coarsest level" if len(shapes) > 1 else "the output"
            raise OptionError(
                f"{where} would be {h}x{w} px, but {self.model} up to {self.layers[-1]} needs at least "
                f"{need} px on each side: increase size (now {self.size})"
                + (f" or use fewer scales (now {self.scales})" if self.scales > 1 else "")
                + " or crop the content to a less elongated shape"
            )

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly settings (an init array is summarised by its shape)."""
        d = asdict(self)
        d.pop("extra")
        if isinstance(self.init, np.ndarray):
            d["init"] = f"array{tuple(self.init.shape)}"
        return d

    # ------------------------------------------------------------------ validation

    def validate(self) -> None:
        self.size = _int(self.size, "size", 1, MAX_SIZE)
        self.steps = _int(self.steps, "steps", 1, 10_000_000)
        self.scales = _int(self.scales, "scales", 1, 8)
        self.pyramid = _int(self.pyramid, "pyramid", 0, 12)
        self.preview_every = _int(self.preview_every, "preview_every", 1, 10_000_000)
        for name in ("content_weight", "style_weight"):
            if getattr(self, name) is not None:
                setattr(self, name, _float(getattr(self, name), name))
        self.tv_weight = _float(self.tv_weight, "tv_weight")
        self.style_scale = _float(self.style_scale, "style_scale", positive=True)
        if self.seed is not None:
            self.seed = _int(self.seed, "seed", 0, 2**63 - 1)
        self.content_layers = _names(self.content_layers, "content_layers")
        self.style_layers = _names(self.style_layers, "style_layers")
        if self.style_layer_weights is not None:
            w = tuple(_float(v, "style_layer_weights") for v in _seq(self.style_layer_weights, "style_layer_weights"))
            if len(w) != len(self.style_layers):
                raise OptionError(
                    f"style_layer_weights has {len(w)} values but style_layers has "
                    f"{len(self.style_layers)}; give one weight per style layer"
                )
            self.style_layer_weights = w
        _choice(self.model, "model", ("vgg16", "vgg19"))
        check_layers(self.model, self.content_layers, "content layer")
        check_layers(self.model, self.style_layers, "style layer")
        _choice(self.pooling, "pooling", ("max", "avg"))
        _choice(self.optimizer, "optimizer", OPTIMIZERS)
        _choice(self.precision, "precision", PRECISIONS)
        if not isinstance(self.device, str) or not (
            self.device in DEVICES or self.device.startswith("cuda:")
        ):
            raise OptionError(f"device must be one of {DEVICES} or 'cuda:N', got {self.device!r}")
        if isinstance(self.init, str):
            _choice(self.init, "init", INITS)
        elif not isinstance(self.init, np.ndarray):
            try:
                self.init = np.asarray(self.init)
            except Exception:
                raise OptionError(f"init must be one of {INITS} or an image array") from None
        if self.weights is not None:
            if not isinstance(self.weights, (str, os.PathLike)):
                raise OptionError(f"weights must be None or a file path, got {type(self.weights).__name__}")
            self.weights = os.fspath(self.weights) or None


def level_shapes(shape: tuple[int, int], size: int, scales: int) -> list[tuple[int, int]]:
    """Working shapes, coarse to fine, each level twice the one before; the last has long edge ``size``."""
    return [resized_shape(shape, max(1, round(size / 2 ** (scales - 1 - k)))) for k in range(scales)]


def effective_levels(shape: tuple[int, int], size: int, scales: int, steps: int, need: int) -> int:
    """Coarse-to-fine levels actually used: at most ``scales``, no more than ``steps``, and only
    levels whose shorter side is at least ``need`` px (the network's minimum); at least 1."""
    levels = max(1, min(scales, steps))
    while levels > 1 and min(level_shapes(shape, size, levels)[0]) < need:
        levels -= 1
    return levels


def _int(v: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        else:
            raise OptionError(f"{name} must be an integer, got {v!r}")
    if not lo <= int(v) <= hi:
        raise OptionError(f"{name} must be between {lo} and {hi}, got {v}")
    return int(v)


def _float(v: Any, name: str, positive: bool = False) -> float:
    if isinstance(v, bool):
        raise OptionError(f"{name} must be a number, got {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise OptionError(f"{name} must be a number, got {v!r}") from None
    if not np.isfinite(f) or f < 0 or (positive and f == 0):
        need = "a finite number > 0" if positive else "a finite number >= 0"
        raise OptionError(f"{name} must be {need}, got {v!r}")
    if f > _FLOAT32_MAX:  # the objective is float32: a larger factor can only give inf or NaN
        raise OptionError(f"{name} must be at most {_FLOAT32_MAX:.4g} (the largest float32), got {v!r}")
    return f


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _seq(v: Any, name: str) -> tuple[Any, ...]:
    if isinstance(v, str):
        v = [s.strip() for s in v.split(",") if s.strip()]
    try:
        return tuple(v)
    except TypeError:
        raise OptionError(f"{name} must be a list, got {v!r}") from None


def _names(v: Any, name: str) -> tuple[str, ...]:
    out = _seq(v, name)
    if not out or not all(isinstance(s, str) for s in out):
        raise OptionError(f"{name} must be a non-empty list of layer names like 'relu4_2', got {v!r}")
    return out


def _choice(v: Any, name: str, choices: tuple[str, ...]) -> None:
    if v not in choices:
        raise OptionError(f"{name} must be one of {choices}, got {v!r}")
