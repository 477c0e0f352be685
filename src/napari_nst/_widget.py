"""The "Style Transfer" dock widget.

Design (see docs/napari.md):

- The engine runs in a child process (:class:`napari_nst.core.remote.EngineProcess`): this
  process never imports torch. Importing torch's compiler stack (triton) after napari created its
  OpenGL context segfaults under Mesa's software OpenGL (Xvfb, VMs, remote desktops); a separate
  process also keeps the GIL off napari's event loop, lets Stop end a run at once, and confines an
  out-of-memory crash to the child.
- A napari ``thread_worker`` iterates the child's progress records and yields them to the main
  thread, which coalesces them (the newest image wins) and updates the pastiche layer at most
  every :data:`UPDATE_INTERVAL` seconds. Layers are only touched on the main thread.
- Scripts and tests drive the widget through its sub-widgets by name (``content``, ``style``,
  ``size``, ``steps``, ``style_weight``, ``content_weight``, ``model``, ``weights``, ``device``,
  ``seed``, ``run`` ...); ``worker`` is the running worker or None.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit, PushButton, SpinBox

from . import __version__
from ._layers import displayed_axes, layer_to_rgb, pastiche_placement
from ._settings import load_settings, option_docs, probe_devices, quick_device_guess, save_settings
from .core.errors import DeviceMemoryError, EngineProcessError, NonFiniteLossError, WeightsError
from .core.images import resized_shape
from .core.options import DEVICES, MAX_SIZE, OPTIMIZERS, PRECISIONS, Options
from .core.records import Progress

if TYPE_CHECKING:  # pragma: no cover
    import napari

log = logging.getLogger(__name__)

#: the child process sends at most one image per this many seconds ...
MIN_IMAGE_INTERVAL = 0.1
#: ... and the main thread applies the newest pending record at most this often
UPDATE_INTERVAL = 0.05
#: lower CPU priority of the engine process, so that napari stays responsive on a busy CPU
ENGINE_NICE = 10
#: widget defaults on a machine without a GPU: a smaller, quicker run than the engine's defaults
CPU_SIZE = 256
CPU_STEPS = 100
#: metadata key of pastiche layers
META_KEY = "napari_nst"

_DEFAULTS = Options()
_DOCS = {k: v.replace("``", "") for k, v in option_docs().items()}

# every live engine process, so that none outlives napari (killed at interpreter exit)
_LIVE_PROCESSES: set[Any] = set()


@atexit.register
def _kill_live_processes() -> None:  # pragma: no cover - runs at exit
    for proc in list(_LIVE_PROCESSES):
        proc.cancel()


def _real(obj: Any) -> Any:
    """The object behind napari's PublicOnlyProxy (plugins get a proxied viewer)."""
    return getattr(obj, "__wrapped__", obj)


def _same(a: Any, b: Any) -> bool:
    return a is not None and b is not None and _real(a) is _real(b)


def _tip(name: str, extra: str = "") -> str:
    text = _DOCS.get(name, "")
    return (text + (" " if text and extra else "") + extra).strip()


def _fmt_loss(v: float) -> str:
    return f"{v:.3g}"


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _snapshot(layer: Any) -> Any:
    """A read-only, layer-like copy of what :func:`layer_to_rgb` and placement need.

    Taken on the main thread; the worker thread converts it (so that a slow dask/zarr read or a
    large conversion never blocks napari) without touching the live layer.
    """
    from types import SimpleNamespace

    return SimpleNamespace(
        name=layer.name, data=layer.data, ndim=int(layer.ndim), rgb=bool(layer.rgb),
        multiscale=bool(layer.multiscale), contrast_limits=tuple(layer.contrast_limits),
        gamma=float(layer.gamma), colormap=layer.colormap,
        downsample_factors=np.asarray(layer.downsample_factors) if layer.multiscale else None,
        scale=np.array(layer.scale, dtype=float), translate=np.array(layer.translate, dtype=float),
        rotate=np.array(layer.rotate, dtype=float), shear=np.array(layer.shear, dtype=float),
        affine=layer.affine, world_to_data=layer.world_to_data,
        shape=tuple(layer.data[0].shape if layer.multiscale else layer.data.shape),
    )


@dataclass
class _Run:
    """Book-keeping of the current run (main thread only, except ``proc``/``stop_requested``)."""

    content: Any
    style: Any
    init_layer: Any
    options: dict[str, Any]
    settings: dict[str, Any]
    snapshot: Any
    axes: tuple[int, int]
    full_shape: tuple[int, int]
    layer_name: str
    final_shape: tuple[int, int]
    layer: Any = None
    proc: Any = None
    stop_requested: bool = False
    stop_reason: Optional[str] = None
    outcome: str = "running"
    error: Optional[BaseException] = None
    notes: list[str] = field(default_factory=list)
    last: Optional[Progress] = None
    working_shape: Optional[tuple[int, int]] = None
    started: float = field(default_factory=time.perf_counter)
    first_record_at: Optional[float] = None
    pbar: Any = None
    pbar_at: float = 0.0
    level: int = 0
    # ETA: seconds per evaluation at the current level, smoothed
    rate: Optional[float] = None
    rate_step: int = 0
    rate_time: float = 0.0
    updates: int = 0


class _ProbeSignal:
    """Carries the device probe's answer from its thread to the main thread."""

    def __init__(self) -> None:
        from qtpy.QtCore import QObject, Signal

        class _Emitter(QObject):
            done = Signal(object)

        self.emitter = _Emitter()


class StyleTransferWidget(Container):
    """Paint the content image in the style of another, live, in the viewer."""

    #: option widgets remembered between sessions (values the user changed only)
    _PERSIST = (
        "size", "steps", "style_weight", "content_weight", "model", "weights", "device", "seed",
        "content_layers", "style_layers", "style_layer_weights", "pooling", "optimizer", "init", "scales",
        "pyramid", "style_scale", "tv_weight", "precision", "show_advanced",
    )

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.worker: Any = None
        self._run: Optional[_Run] = None
        self._pending: Optional[Progress] = None
        self._pending_image: Optional[Progress] = None
        self._touched: set[str] = set()
        self._programmatic = 0
        self._closed = False
        self._busy = False
        self._result: Any = None
        self._draw_cost: Optional[float] = None
        self._next_flush = 0.0
        self._gpu: Optional[bool] = None if quick_device_guess() is None else False
        self._gpu_names: list[str] = []
        self._last_pastiche: Any = None
        self._build()
        self._restore_settings()
        self._apply_machine_defaults()
        self._connect_viewer()
        if self._gpu is None:
            self._start_probe()
        self._set_idle()

    # ------------------------------------------------------------------ construction

    def _build(self) -> None:
        self.content = ComboBox(
            name="content", label="Content", choices=self._image_choices,
            tooltip="The image whose content (shapes, layout) the pastiche keeps: an Image layer, read as "
                    "shown (contrast limits, current slice).",
        )
        self.style = ComboBox(
            name="style", label="Style", choices=self._image_choices,
            tooltip="The image whose style (colours, textures, brush strokes) is painted onto the content.",
        )
        self.size = SpinBox(
            name="size", label="Size (px)", min=32, max=MAX_SIZE, step=32, value=CPU_SIZE,
            tooltip=_tip("size", f"Default: {CPU_SIZE} on a CPU, {_DEFAULTS.size} on a GPU. "
                                 "Time per step grows with the number of pixels."),
        )
        self.steps = SpinBox(
            name="steps", label="Steps", min=1, max=1_000_000, step=50, value=CPU_STEPS,
            tooltip=_tip("steps", f"Default: {CPU_STEPS} on a CPU, {_DEFAULTS.steps} on a GPU. "
                                  "You can Stop at any time and keep the pastiche."),
        )
        self.style_weight = LineEdit(
            name="style_weight", label="Style weight", value="",
            tooltip=_tip("style_weight", "Empty = automatic (recommended). Raise it for more style, "
                                         "e.g. 10x the automatic value shown after a run."),
        )
        self.content_weight = LineEdit(
            name="content_weight", label="Content weight", value="",
            tooltip=_tip("content_weight", "Empty = automatic (recommended)."),
        )
        for w in (self.style_weight, self.content_weight):
            w.native.setPlaceholderText("auto")
        self.model = ComboBox(name="model", label="Network", choices=("vgg19", "vgg16"), value=_DEFAULTS.model,
                              tooltip=_tip("model"))
        self.weights = FileEdit(
            name="weights", label="Weights", mode="r", nullable=True,
            filter="PyTorch weights (*.pth *.pt);;All files (*)",
            tooltip=_tip("weights", "Empty: torchvision's ImageNet weights for the chosen network (downloaded "
                                    "once; or set NAPARI_NST_WEIGHTS). Give a .pth file to work offline."),
        )
        self.device = ComboBox(name="device", label="Device", choices=self._device_choices(),
                               value=_DEFAULTS.device, tooltip=_tip("device"))
        self.seed = SpinBox(name="seed", label="Seed", min=-1, max=2**31 - 1,
                            value=-1 if _DEFAULTS.seed is None else _DEFAULTS.seed,
                            tooltip=_tip("seed", "-1 = random."))
        self.seed.native.setSpecialValueText("random")

        self.show_advanced = CheckBox(name="show_advanced", text="Advanced settings", value=False,
                                      tooltip="Show the network layers, optimiser, initialisation, scales ...")
        self.content_layers = LineEdit(name="content_layers", label="Content layers",
                                       value=", ".join(_DEFAULTS.content_layers),
                                       tooltip=_tip("content_layers", "Comma-separated, e.g. relu4_2."))
        self.style_layers = LineEdit(name="style_layers", label="Style layers",
                                     value=", ".join(_DEFAULTS.style_layers),
                                     tooltip=_tip("style_layers", "Comma-separated, e.g. relu1_1, relu2_1."))
        self.style_layer_weights = LineEdit(name="style_layer_weights", label="Layer weights", value="",
                                            tooltip=_tip("style_layer_weights", "Comma-separated, one per style "
                                                         "layer; empty = equal."))
        self.style_layer_weights.native.setPlaceholderText("equal")
        self.pooling = ComboBox(name="pooling", label="Pooling", choices=("max", "avg"), value=_DEFAULTS.pooling,
                                tooltip=_tip("pooling"))
        self.optimizer = ComboBox(name="optimizer", label="Optimiser", choices=OPTIMIZERS,
                                  value=_DEFAULTS.optimizer, tooltip=_tip("optimizer"))
        self.init = ComboBox(name="init", label="Start from", choices=self._init_choices,
                             tooltip=_tip("init", "Or an image layer, e.g. an earlier pastiche to refine it "
                                                  "(the Continue button does that)."))
        self.scales = SpinBox(name="scales", label="Scales", min=1, max=8, value=_DEFAULTS.scales,
                              tooltip=_tip("scales"))
        self.pyramid = SpinBox(name="pyramid", label="Pyramid", min=0, max=12, value=_DEFAULTS.pyramid,
                               tooltip=_tip("pyramid"))
        self.style_scale = FloatSpinBox(name="style_scale", label="Style scale", min=0.05, max=8.0, step=0.05,
                                        value=_DEFAULTS.style_scale, tooltip=_tip("style_scale"))
        self.tv_weight = LineEdit(name="tv_weight", label="TV weight", value=f"{_DEFAULTS.tv_weight:g}",
                                  tooltip=_tip("tv_weight"))
        self.precision = ComboBox(name="precision", label="Precision", choices=PRECISIONS,
                                  value=_DEFAULTS.precision, tooltip=_tip("precision"))
        self.reset_defaults = PushButton(name="reset_defaults", text="Reset all settings to defaults",
                                         tooltip="Forget the remembered settings and use the defaults for this machine.")
        self._advanced = (
            self.content_layers, self.style_layers, self.style_layer_weights, self.pooling, self.optimizer,
            self.init, self.scales, self.pyramid, self.style_scale, self.tv_weight, self.precision, self.reset_defaults,
        )
        self.run = PushButton(name="run", text="Run", tooltip="Start painting (Stop ends the run and keeps the "
                                                             "pastiche so far).")
        self.continue_run = PushButton(name="continue_run", text="Continue",
                                       tooltip="Start a new run from the last pastiche (or from the pastiche layer "
                                               "selected in the layer list), with the settings above.")
        buttons = Container(name="buttons", label="", layout="horizontal", labels=False,
                            widgets=[self.run, self.continue_run])
        buttons.margins = (0, 0, 0, 0)
        self.status = Label(name="status", label="", value="", tooltip="Progress of the current or last run")
        self.status.native.setWordWrap(True)
        self.extend([
            self.content, self.style, self.size, self.steps, self.style_weight, self.content_weight,
            self.model, self.weights, self.device, self.seed, self.show_advanced, *self._advanced,
        ])
        from ._lossplot import LossPlot

        # full width, without a label column: buttons, status text, loss curve
        self._buttons = buttons
        self.plot = LossPlot()
        for w in (buttons.native, self.status.native, self.plot):
            self.native.layout().addWidget(w)
        self._show_advanced(False)

        self.run.changed.connect(self._on_run_clicked)
        self.continue_run.changed.connect(self._on_continue_clicked)
        self.reset_defaults.changed.connect(self._on_reset_defaults)
        self.show_advanced.changed.connect(self._show_advanced)
        self.device.changed.connect(lambda *_: self._apply_machine_defaults())
        for name in self._PERSIST:
            getattr(self, name).changed.connect(partial(self._on_user_change, name))
        self.native.destroyed.connect(partial(_on_native_destroyed, self._kill_box(), weakref.ref(self)))

    def _kill_box(self) -> list[Any]:
        # a list shared with the destroyed-callback, which must not hold a reference to self
        self._box: list[Any] = []
        return self._box

    def _show_advanced(self, show: bool) -> None:
        for w in self._advanced:
            w.visible = bool(show)

    # ------------------------------------------------------------------ choices

    def _image_layers(self) -> list[Any]:
        from napari.layers import Image

        return [lay for lay in reversed(self._viewer.layers) if isinstance(lay, Image)]

    def _image_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(lay.name, lay) for lay in self._image_layers()]

    def _init_choices(self, *_: Any) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = [("content image", "content"), ("noise", "noise")]
        out += [(f"layer: {lay.name}", lay) for lay in self._image_layers()]
        return out

    def _device_choices(self) -> list[str]:
        if self._gpu is False:
            return ["auto", "cpu"]
        out = list(DEVICES)
        out += [f"cuda:{i}" for i in range(1, len(self._gpu_names))]
        return out

    def reset_choices(self, *args: Any) -> None:
        """Refresh the layer pickers (napari calls this when layers are added, removed, renamed)."""
        super().reset_choices(*args)
        c, s = self.content.value, self.style.value
        if _same(c, s):
            others = [lay for lay in self._image_layers() if not _same(lay, c)]
            if others:
                # a new layer set both pickers to the same image: pick another one for the style
                self.style.value = others[0]

    def _connect_viewer(self) -> None:
        ev = self._viewer.layers.events
        for name in ("inserted", "removed", "reordered", "moved"):
            if hasattr(ev, name):
                getattr(ev, name).connect(self._on_layers_changed)
        ev.removed.connect(self._on_layer_removed)
        for layer in self._viewer.layers:
            layer.events.name.connect(self._on_layers_changed)
        ev.inserted.connect(lambda e: e.value.events.name.connect(self._on_layers_changed))
        self.reset_choices()

    def _on_layers_changed(self, *_: Any) -> None:
        if not self._closed:
            self.reset_choices()

    # ------------------------------------------------------------------ settings

    @contextmanager
    def _quiet(self):
        self._programmatic += 1
        try:
            yield
        finally:
            self._programmatic -= 1

    def _on_user_change(self, name: str, *_: Any) -> None:
        if self._programmatic:
            return
        self._touched.add(name)
        self._save_settings()

    def _setting_value(self, name: str) -> Any:
        value = getattr(self, name).value
        if name == "weights":
            return str(value) if value else None
        if name == "init":
            return value if isinstance(value, str) else "content"
        return value

    def _save_settings(self) -> None:
        values = {n: self._setting_value(n) for n in sorted(self._touched)}
        err = save_settings(values)
        if err:
            log.warning(err)

    def _restore_settings(self) -> None:
        with self._quiet():
            for name, value in load_settings().items():
                if name not in self._PERSIST:
                    continue
                w = getattr(self, name)
                try:
                    if name == "device" and value not in self.device.choices:
                        continue
                    w.value = value
                except Exception:  # a stale or hand-edited value: keep the default
                    continue
                self._touched.add(name)
        self._show_advanced(self.show_advanced.value)

    def _on_reset_defaults(self, *_: Any) -> None:
        self._touched.clear()
        with self._quiet():
            self.style_weight.value = ""
            self.content_weight.value = ""
            self.model.value = _DEFAULTS.model
            self.weights.value = None
            self.device.value = _DEFAULTS.device
            self.seed.value = -1 if _DEFAULTS.seed is None else _DEFAULTS.seed
            self.content_layers.value = ", ".join(_DEFAULTS.content_layers)
            self.style_layers.value = ", ".join(_DEFAULTS.style_layers)
            self.style_layer_weights.value = ""
            self.pooling.value = _DEFAULTS.pooling
            self.optimizer.value = _DEFAULTS.optimizer
            self.init.value = "content"
            self.scales.value = _DEFAULTS.scales
            self.pyramid.value = _DEFAULTS.pyramid
            self.style_scale.value = _DEFAULTS.style_scale
            self.tv_weight.value = f"{_DEFAULTS.tv_weight:g}"
            self.precision.value = _DEFAULTS.precision
        self._apply_machine_defaults()
        self._save_settings()

    def _will_use_gpu(self) -> bool:
        dev = self.device.value
        if dev == "cpu":
            return False
        if dev == "auto":
            return bool(self._gpu)
        return True

    def _apply_machine_defaults(self) -> None:
        """Size and steps the user did not set: quicker on a CPU than on a GPU."""
        gpu = self._will_use_gpu()
        with self._quiet():
            if "size" not in self._touched:
                self.size.value = _DEFAULTS.size if gpu else min(CPU_SIZE, _DEFAULTS.size)
            if "steps" not in self._touched:
                self.steps.value = _DEFAULTS.steps if gpu else min(CPU_STEPS, _DEFAULTS.steps)

    def _start_probe(self) -> None:
        box = _ProbeSignal()
        self._probe = box
        box.emitter.done.connect(self._on_probe_done)

        def work() -> None:
            result = probe_devices()
            try:
                box.emitter.done.emit(result)
            except RuntimeError:  # the widget is gone
                pass

        threading.Thread(target=work, name="napari-nst-device-probe", daemon=True).start()

    def _on_probe_done(self, result: dict[str, Any]) -> None:
        if self._closed:
            return
        self._gpu_names = list(result.get("cuda") or [])
        self._gpu = bool(self._gpu_names or result.get("mps"))
        with self._quiet():
            current = self.device.value
            self.device.choices = self._device_choices()
            if current in self.device.choices:
                self.device.value = current
        names = ", ".join(self._gpu_names) or ("Apple MPS" if result.get("mps") else "none found")
        self.device.tooltip = _tip("device", f"GPUs here: {names}.")
        self._apply_machine_defaults()

    # ------------------------------------------------------------------ options

    @staticmethod
    def _number(text: str, label: str, auto_ok: bool = True) -> Optional[float]:
        text = (text or "").strip()
        if not text or text.lower() == "auto":
            if auto_ok:
                return None
            return 0.0
        try:
            return float(text)
        except ValueError:
            raise ValueError(
                f"{label}: {text!r} is not a number; enter e.g. 1e5"
                + (", or leave it empty for automatic" if auto_ok else "")
            ) from None

    def options(self) -> dict[str, Any]:
        """The engine options the widget's fields say (``init`` a string or a layer). Raises ValueError."""
        weights = self.weights.value
        layer_w = (self.style_layer_weights.value or "").strip()
        try:
            lw = tuple(float(v) for v in layer_w.split(",") if v.strip()) if layer_w else None
        except ValueError:
            raise ValueError(f"Layer weights: {layer_w!r} must be numbers separated by commas, or empty") from None
        seed = int(self.seed.value)
        return dict(
            size=int(self.size.value), steps=int(self.steps.value),
            style_weight=self._number(self.style_weight.value, "Style weight"),
            content_weight=self._number(self.content_weight.value, "Content weight"),
            tv_weight=self._number(self.tv_weight.value, "TV weight", auto_ok=False),
            content_layers=tuple(s.strip() for s in self.content_layers.value.split(",") if s.strip()),
            style_layers=tuple(s.strip() for s in self.style_layers.value.split(",") if s.strip()),
            style_layer_weights=lw, model=self.model.value,
            weights=str(weights) if weights and str(weights) not in ("", ".") else None,
            pooling=self.pooling.value, optimizer=self.optimizer.value, init=self.init.value,
            scales=int(self.scales.value), pyramid=int(self.pyramid.value), style_scale=float(self.style_scale.value),
            device=self.device.value, precision=self.precision.value, seed=None if seed < 0 else seed,
        )

    # ------------------------------------------------------------------ run / stop

    def _on_run_clicked(self, *_: Any) -> None:
        if self.worker is not None:
            self.stop()
        else:
            self.start()

    def _continue_source(self) -> Any:
        active = self._viewer.layers.selection.active
        if active is not None and META_KEY in getattr(active, "metadata", {}):
            return active
        if self._last_pastiche is not None and self._last_pastiche in self._viewer.layers:
            return self._last_pastiche
        for lay in self._image_layers():
            if META_KEY in lay.metadata:
                return lay
        return None

    def _on_continue_clicked(self, *_: Any) -> None:
        if self.worker is not None:
            return
        src = self._continue_source()
        if src is None:
            self._error("Nothing to continue from: press Run first; Continue starts a new run from the "
                        "pastiche it made (or from the pastiche layer selected in the layer list).")
            return
        self.start(init_layer=src)

    def start(self, init_layer: Any = None) -> bool:
        """Start a run (as the Run button does); False (and a notification) if it cannot start."""
        if self.worker is not None:
            return False  # one run at a time
        content, style = self.content.value, self.style.value
        if content is None or style is None:
            which = "a content" if content is None else "a style"
            self._error(
                f"Pick {which} image in the Style Transfer panel. No image layer? Open one (File > Open), "
                "or load the samples: File > Open Sample > Neural Style Transfer."
            )
            return False
        if _same(content, style):
            self._error(f"Content and style are the same layer ({content.name!r}); pick a different image as "
                        "the style (e.g. a painting).")
            return False
        for lay, what in ((content, "content"), (style, "style")):
            if lay not in self._viewer.layers:
                self._error(f"The {what} layer {lay.name!r} is no longer in the viewer; pick another one.")
                self.reset_choices()
                return False
        try:
            opts = self.options()
        except ValueError as exc:
            self._error(str(exc))
            return False
        if init_layer is None and not isinstance(opts["init"], str):
            init_layer = opts["init"]
        if init_layer is not None and init_layer not in self._viewer.layers:
            self._error("The layer to start from is no longer in the viewer; pick another one under Start from.")
            return False
        opts["init"] = "content" if init_layer is not None else opts["init"]
        try:
            settings = Options.from_kwargs(**opts).as_dict()  # cheap validation here, full in the worker
        except ValueError as exc:
            self._error(str(exc))
            return False
        settings["init"] = f"layer: {init_layer.name}" if init_layer is not None else opts["init"]

        dims = self._viewer.dims
        point, displayed = tuple(dims.point), tuple(dims.displayed)
        snap_c, snap_s = _snapshot(content), _snapshot(style)
        snap_i = _snapshot(init_layer) if init_layer is not None else None
        axes = displayed_axes(snap_c.ndim, len(point), displayed) if snap_c.ndim > 2 else (0, 1)
        full_shape = (int(snap_c.shape[axes[0]]), int(snap_c.shape[axes[1]]))
        name = f"{content.name} × {style.name}" + (" (continued)" if init_layer is not None else "")
        run = _Run(
            content=content, style=style, init_layer=init_layer, options=opts, settings=settings,
            snapshot=snap_c, axes=axes, full_shape=full_shape, layer_name=name,
            final_shape=resized_shape(full_shape, opts["size"]),
        )
        self._run = run
        self._box[:] = [run]
        self._pending = self._pending_image = self._result = None
        self.plot.clear(opts["steps"])
        self._update_status_text("Starting the engine (loading torch and the network) ...")

        from napari.qt.threading import create_worker
        from napari.utils import progress

        run.pbar = progress(total=opts["steps"], desc=f"Style transfer: {name}")
        worker = create_worker(
            self._work, run, snap_c, snap_s, snap_i, point, displayed, _start_thread=False,
        )
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        worker.aborted.connect(self._kill)
        self.worker = worker
        self._set_running()
        worker.start()
        return True

    def stop(self, reason: Optional[str] = None) -> None:
        """End the current run within one evaluation; the pastiche so far is kept."""
        run = self._run
        if run is None or self.worker is None:
            return
        run.stop_reason = run.stop_reason or reason
        run.stop_requested = True
        self._kill()
        self.run.enabled = False  # until the worker has finished
        self.run.text = "Stopping ..."

    def _kill(self, *_: Any) -> None:
        run = self._run
        if run is not None:
            run.stop_requested = True
            if run.proc is not None:
                run.proc.cancel()

    # -- worker thread ---------------------------------------------------------------

    @staticmethod
    def _work(run: _Run, snap_c: Any, snap_s: Any, snap_i: Any, point: tuple, displayed: tuple):
        """Runs in napari's thread worker: converts the layers, then relays the engine's records.

        Touches no layer and no widget; returns ``(outcome, exception or None)``.
        """
        from .core.remote import EngineProcess

        try:
            notes = []
            c, note = layer_to_rgb(snap_c, point, displayed, name="content")
            notes.append(note)
            s, note = layer_to_rgb(snap_s, point, displayed, name="style")
            notes.append(note)
            opts = dict(run.options)
            if snap_i is not None:
                opts["init"], note = layer_to_rgb(snap_i, point, displayed, name="init")
                notes.append(note)
            yield ("notes", [n for n in notes if n])
            proc = EngineProcess(c, s, min_interval=MIN_IMAGE_INTERVAL, nice=ENGINE_NICE, **opts)
            run.proc = proc
            if run.stop_requested:
                proc.cancel()
            _LIVE_PROCESSES.add(proc)
            try:
                for rec in proc:
                    yield rec
                outcome = "stopped" if proc.cancelled else "finished"
            finally:
                proc.cancel()  # no-op after a normal end; kills the child if this generator is closed
                _LIVE_PROCESSES.discard(proc)
            return (outcome, None)
        except Exception as exc:  # reported on the main thread as a notification
            if not isinstance(exc, (ValueError, MemoryError, EngineProcessError)):
                log.exception("style transfer failed")
            return ("failed", exc)

    # -- main thread -----------------------------------------------------------------

    def _on_yielded(self, item: Any) -> None:
        run = self._run
        if run is None or self._closed:
            return
        if isinstance(item, tuple) and item and item[0] == "notes":
            run.notes = list(item[1])
            for note in run.notes:
                self._info(note)
            return
        rec: Progress = item
        if run.outcome != "running":
            return  # already finished on this side
        if run.first_record_at is None:
            run.first_record_at = time.perf_counter()
        self._track_rate(run, rec)
        self.plot.add(rec.step, rec.losses.get("total", float("nan")), new_level=rec.level != run.level)
        run.level = rec.level
        self._pending = rec
        if rec.image is not None:
            self._pending_image = rec
        if not self._timer_active():
            self._start_timer()

    def _timer_active(self) -> bool:
        return getattr(self, "_timer", None) is not None and self._timer.isActive()

    def _start_timer(self) -> None:
        """Flush soon, but leave the display time to draw the last update (adaptive throttle)."""
        from qtpy.QtCore import QTimer

        if getattr(self, "_timer", None) is None:
            self._timer = QTimer(self.native)
            self._timer.setSingleShot(True)
            self._timer.timeout.connect(self._flush)
        wait = max(UPDATE_INTERVAL, self._next_flush - time.perf_counter())
        self._timer.start(int(wait * 1000))

    def _measure_draw(self, t0: float) -> None:
        """Called by a 0-ms timer after an update: the time napari took to apply and draw it."""
        cost = time.perf_counter() - t0
        self._draw_cost = cost if self._draw_cost is None else 0.7 * self._draw_cost + 0.3 * cost
        # spend at most about a third of the main thread on showing the pastiche
        self._next_flush = time.perf_counter() + 2.0 * self._draw_cost

    def _track_rate(self, run: _Run, rec: Progress) -> None:
        now = time.perf_counter()
        if rec.level != run.level or run.rate_step == 0:
            run.rate_step, run.rate_time = rec.step, now  # a new level: restart the rate
            return
        if rec.step > run.rate_step:
            r = (now - run.rate_time) / (rec.step - run.rate_step)
            run.rate = r if run.rate is None or rec.step - run.rate_step < 2 else 0.7 * run.rate + 0.3 * r
            run.rate_step, run.rate_time = rec.step, now

    def _flush(self) -> None:
        """Apply the newest pending record: layer data, placement, status, progress, plot."""
        run = self._run
        if run is None or self._closed:
            return
        if self._busy:  # re-entered (napari's progress bar processes events): try again shortly
            self._start_timer()
            return
        self._busy = True
        try:
            img_rec, rec = self._pending_image, self._pending
            self._pending_image = self._pending = None
            if img_rec is not None and run.outcome == "running" and not run.stop_reason:
                from qtpy.QtCore import QTimer

                t0 = time.perf_counter()
                self._show_image(run, img_rec.image, img_rec.shape)
                run.updates += 1
                QTimer.singleShot(0, partial(self._measure_draw, t0))
            if rec is not None and run.outcome == "running":
                run.last = rec
                self._update_status(run, rec)
                if run.layer is not None and run.layer in self._viewer.layers:
                    run.layer.metadata = self._metadata(run)
            self.plot.update()
        finally:
            self._busy = False
        # last, and not too often: napari's progress bar calls QApplication.processEvents() on every change
        if rec is not None and run.pbar is not None and run.outcome == "running":
            now = time.perf_counter()
            if rec.step - run.pbar.n >= max(1, rec.total // 100) or now - run.pbar_at > 0.5:
                run.pbar_at = now
                run.pbar.update(max(0, rec.step - run.pbar.n))

    def _show_image(self, run: _Run, image: np.ndarray, shape: tuple[int, int]) -> None:
        shape = tuple(int(v) for v in (shape if shape and shape[0] else image.shape[:2]))
        if run.layer is None:
            place = pastiche_placement(run.snapshot, run.axes, run.full_shape, shape)
            run.layer = self._viewer.add_image(
                image, name=run.layer_name, rgb=True, contrast_limits=(0.0, 1.0), interpolation2d="linear",
                metadata=self._metadata(run), **place,
            )
            self._last_pastiche = run.layer
            run.working_shape = shape
            return
        if run.layer not in self._viewer.layers:
            return
        if shape != run.working_shape:
            place = pastiche_placement(run.snapshot, run.axes, run.full_shape, shape)
            run.layer.data = image
            run.layer.scale = place["scale"]
            run.layer.translate = place["translate"]
            run.working_shape = shape
        else:
            run.layer.data = image

    def _metadata(self, run: _Run) -> dict[str, Any]:
        rec = run.last
        meta: dict[str, Any] = {
            "content": run.content.name, "style": run.style.name, "settings": dict(run.settings),
            "status": run.outcome, "napari_nst_version": __version__,
        }
        if run.notes:
            meta["notes"] = list(run.notes)
        if rec is not None:
            meta.update(
                step=rec.step, total=rec.total, losses=dict(rec.losses), weights=dict(rec.weights),
                device=rec.device, elapsed=round(rec.elapsed, 3), shape=tuple(rec.shape),
                level=rec.level, levels=rec.levels,
            )
        if run.stop_reason:
            meta["stop_reason"] = run.stop_reason
        if run.error is not None:
            meta["error"] = f"{type(run.error).__name__}: {run.error}"
        return {META_KEY: meta}

    def _eta(self, run: _Run, rec: Progress) -> float:
        if run.rate is None:
            return float("nan")
        left = rec.total - rec.step
        if rec.level < rec.levels and rec.shape[0]:
            # later levels are larger: scale the rate by pixels (an upper estimate)
            grow = (run.final_shape[0] * run.final_shape[1]) / max(1, rec.shape[0] * rec.shape[1])
            return left * run.rate * grow
        return left * run.rate

    def _update_status(self, run: _Run, rec: Progress) -> None:
        losses = "  ".join(f"{k} {_fmt_loss(v)}" for k, v in rec.losses.items())
        level = f" · level {rec.level}/{rec.levels} ({rec.shape[1]}×{rec.shape[0]})" if rec.levels > 1 else ""
        rate = f" · {run.rate:.2g} s/step" if run.rate else ""
        eta = self._eta(run, rec)
        left = f" · about {_fmt_time(eta)} left" if math.isfinite(eta) else ""
        self._update_status_text(f"Step {rec.step}/{rec.total}{level} on {rec.device}{rate}{left}\n{losses}")

    def _update_status_text(self, text: str) -> None:
        self.status.value = text

    def _on_returned(self, result: Any) -> None:
        if self._run is not None:
            self._result = result

    def _on_errored(self, exc: BaseException) -> None:  # a bug in _work itself
        if self._run is not None:
            self._result = ("failed", exc)

    def _on_finished(self, *_: Any) -> None:
        self._finalize()

    def _finalize(self) -> None:
        """The worker has finished: last image, outcome, metadata, messages, idle again."""
        run = self._run
        if run is None:
            self.worker = None
            return
        if self._busy:
            from qtpy.QtCore import QTimer

            QTimer.singleShot(10, self._finalize)
            return
        if run.proc is not None:
            run.proc.cancel()  # no-op when it ended; never leave a child behind
        if self._closed:
            self.worker = None
            return
        self._flush()
        self._busy = True
        try:
            outcome, exc = self._result if isinstance(self._result, tuple) else ("finished", None)
            self._result = None
            if outcome == "failed":
                run.outcome, run.error = "failed", exc
                self._handle_failure(run, exc)
            elif outcome == "stopped" or run.stop_requested:
                run.outcome = "stopped"
            else:
                run.outcome = "finished"
            rec = run.last
            if run.layer is not None and run.layer in self._viewer.layers:
                run.layer.metadata = self._metadata(run)
            if run.outcome == "finished" and rec is not None:
                w = ", ".join(f"{k} {_fmt_loss(v)}" for k, v in rec.weights.items())
                self._update_status_text(
                    f"Done: {rec.step} steps in {_fmt_time(rec.elapsed)} on {rec.device}.\nWeights used: {w}"
                )
            elif run.outcome == "stopped":
                why = f" ({run.stop_reason})" if run.stop_reason else ""
                step = f" at step {rec.step}/{rec.total}" if rec is not None else ""
                kept = "; the pastiche so far is kept" if run.layer is not None and run.layer in self._viewer.layers else ""
                self._update_status_text(f"Stopped{step}{why}{kept}.")
            self.worker = None
            self._set_idle()
        finally:
            self._busy = False
        pbar, run.pbar = run.pbar, None
        if pbar is not None:
            pbar.close()
        if run.outcome == "stopped" and run.stop_reason:
            self._warn(f"Style transfer stopped: {run.stop_reason}.")

    def _handle_failure(self, run: _Run, exc: BaseException) -> None:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, WeightsError):
            text = f"Network weights: {msg}"
        elif isinstance(exc, DeviceMemoryError):
            fit = exc.suggested_size
            text = f"Out of memory: {msg}" + (
                f" Set Size to {fit} (or less) and press Run again, or choose Device cpu." if fit else "")
        elif isinstance(exc, MemoryError):
            text = f"Out of memory: {msg}. Lower Size and press Run again."
        elif isinstance(exc, NonFiniteLossError):
            text = f"{msg}"
            if exc.last_image is not None and run.layer is None:
                self._show_image(run, exc.last_image, exc.last_image.shape[:2])
            elif exc.last_image is not None and run.layer in self._viewer.layers:
                run.layer.data = exc.last_image
        elif isinstance(exc, EngineProcessError):
            text = f"The style-transfer process failed: {msg}"
        elif isinstance(exc, ValueError):
            text = msg
        else:
            text = f"Style transfer failed ({type(exc).__name__}): {msg}"
        self._update_status_text("Failed: " + text)
        self._error(text)

    def _on_layer_removed(self, event: Any) -> None:
        run = self._run
        layer = getattr(event, "value", None)
        if run is None or self.worker is None or layer is None:
            return
        if _same(layer, run.layer):
            self.stop(reason=f"the pastiche layer {layer.name!r} was deleted")
        elif _same(layer, run.content):
            self.stop(reason=f"the content layer {layer.name!r} was deleted")
        elif _same(layer, run.style):
            self.stop(reason=f"the style layer {layer.name!r} was deleted")
        elif _same(layer, run.init_layer) and run.first_record_at is None:
            self.stop(reason=f"the layer {layer.name!r} to start from was deleted")

    # ------------------------------------------------------------------ state & messages

    def _set_running(self) -> None:
        self.run.text = "Stop"
        self.run.enabled = True
        self.run.tooltip = "Stop the run now; the pastiche so far is kept."
        self.continue_run.enabled = False

    def _set_idle(self) -> None:
        self.run.text = "Run"
        self.run.enabled = True
        self.run.tooltip = "Start painting (Stop ends the run and keeps the pastiche so far)."
        self.continue_run.enabled = True

    def _error(self, text: str) -> None:
        from napari.utils.notifications import show_error

        show_error(text)

    def _warn(self, text: str) -> None:
        from napari.utils.notifications import show_warning

        show_warning(text)

    def _info(self, text: str) -> None:
        from napari.utils.notifications import show_info

        show_info(text)

    def close_run(self) -> None:
        """Stop any run and forget the viewer (called when the widget or viewer goes away)."""
        self._closed = True
        self._kill()


def _on_native_destroyed(box: list[Any], owner: Any, *_: Any) -> None:
    """The dock widget is gone (viewer closed): kill its engine process at once, touch no Qt object."""
    widget = owner()
    if widget is not None:
        widget._closed = True
    for run in box:
        run.stop_requested = True
        if run.proc is not None:
            run.proc.cancel()
    box.clear()
