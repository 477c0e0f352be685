"""The "Style Transfer" dock widget: composes the pickers, the generated form and a run controller.

Scripts and tests drive it through its sub-widgets by name (``content``, ``style``, one per
option: ``size``, ``steps``, ``style_weight`` ...; ``run``, ``continue_run``, ``status``) and
``start()``, ``stop()``, ``options()``; ``worker`` is the running worker or None.
See docs/architecture.md for the parts and the flow of a run.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, Container, Label, PushButton

from napari_nst._devices import quick_device_guess
from napari_nst._qt import notify
from napari_nst._qt.controller import RunController
from napari_nst._qt.form import OptionsForm
from napari_nst._qt.inputs_panel import InputsPanel
from napari_nst._qt.live_link import LiveLink
from napari_nst._qt.machine import MachinePart, PlanPart
from napari_nst._qt.mask_panel import MaskPanel
from napari_nst._qt.memory_panel import MemoryPanel
from napari_nst._qt.preview_panel import PreviewPanel
from napari_nst._qt.probe import start_probe
from napari_nst._qt.regions_panel import RegionsPanel
from napari_nst._qt.remembered import RememberedSettings
from napari_nst._qt.run_on import RunOnPanel
from napari_nst._qt.stack_panel import StackPanel
from napari_nst._qt.styles_panel import StylesPanel
from napari_nst._run.plan import RunRequest, build_plan
from napari_nst._run.runner import EngineFactory, local_engines, prewarm
from napari_nst._run.sink import META_KEY
from napari_nst._run.state import same_layer
from napari_nst.core.errors import OptionError
from napari_nst.core.options import Options, spec

if TYPE_CHECKING:  # pragma: no cover
    import napari

RUN_TIP = "Start painting (Stop ends the run and keeps the pastiche so far)."


class StyleTransferWidget(Container[Any]):
    """Paint the content image in the style of another, live, in the viewer; ``engines`` makes
    each run's engine (the default: a child process, or a dask scheduler's workers)."""

    def __init__(self, viewer: napari.viewer.Viewer, engines: EngineFactory = local_engines) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.machine = MachinePart(None if quick_device_guess() is None else False)
        self.inputs = InputsPanel(viewer)
        self.content, self.style = self.inputs.content, self.inputs.style
        _controls_panels(self, viewer)
        self.stack = StackPanel(viewer)  # "This slice" / "All slices along axis k" (stacks)
        self.slices, self.follow_frame = self.stack.slices, self.stack.follow
        self.run_on_panel = RunOnPanel()  # a stack on this machine or on a dask scheduler's workers
        self.run_on, self.scheduler_address = self.run_on_panel.run_on, self.run_on_panel.address
        self.form = OptionsForm(
            partial(self.inputs.init_choices, spec("init").choices or ()), self.machine.device_choices()
        )
        for name, w in self.form.fields.items():
            setattr(self, name, w)
        self.memory = MemoryPanel(viewer, self, self._will_use_gpu)  # the estimate beside Size
        self.memory_estimate, self.size_row = self.memory.label, self.memory.row(self.form.fields["size"])
        self.plan_part = PlanPart()  # Advanced: measure the fastest compute plan, show the table
        self.measure_plan, self.plan_table = self.plan_part.button, self.plan_part.table
        self._build()
        switches = {
            "show_advanced": self.show_advanced,
            "run_on": self.run_on,
            "scheduler_address": self.scheduler_address,
        }
        self.settings = RememberedSettings(self.form, switches, self._show_remembered)
        self.settings.restore()
        self._refresh_stack()
        self._show_advanced(self.show_advanced.value)
        self._apply_machine_defaults()
        self.controller = RunController(viewer, self, self.native, engines)
        self.live = LiveLink(self, self.controller)  # settings changed during a run
        self.preview = PreviewPanel(viewer, self)  # the instant preview on picking content and style
        self.inputs.follow_renames()
        self.reset_choices()
        self._probe = start_probe(self._on_probe_done) if self._gpu is None else None
        self.memory.connect()
        self.set_idle()
        self._show_remembered()
        self._prewarm()
        self.preview.connect()
        self.preview.request()

    def _prewarm(self) -> None:
        """Load torch and the network in a warm engine process now, not when Run is pressed."""
        try:
            prewarm(self.form.options())
        except ValueError:  # a field the user must fix first: the run will say so
            pass

    # ------------------------------------------------------------------ construction

    def _build(self) -> None:
        b = _Buttons()
        self.show_advanced, self.reset_defaults, self.run, self.continue_run = b.show, b.reset, b.run, b.again
        self.remembered, self.forget, self.status = b.remembered, b.forget, b.status
        self._advanced = [*self.form.advanced(), *self.plan_part.widgets(), self.reset_defaults]
        self._remembered_row = self._row("remembered_row", self.remembered, self.forget)
        self._buttons = self._row("buttons", self.run, self.continue_run)
        self.extend(
            [
                self.content,
                self.styles,
                self.regions,
                self.region_styles,
                self.style_regions,
                self.mask,
                *self.stack.widgets(),
                *self.run_on_panel.widgets(),
                *(self.size_row if w is self.form.fields["size"] else w for w in self.form.basic()),
                self.show_advanced,
                *self._advanced,
            ]
        )
        self.content.changed.connect(lambda *_: self._refresh_stack(self.content.value))
        self._viewer.dims.events.order.connect(lambda *_: self._refresh_stack())
        self._viewer.dims.events.ndisplay.connect(lambda *_: self._refresh_stack())
        from napari_nst._qt.lossplot import LossPlot

        self.plot = LossPlot()  # full width, without a label column: buttons, status text, loss curve
        for w in (self._remembered_row.native, self._buttons.native, self.status.native, self.plot):
            self.native.layout().addWidget(w)
        self._show_advanced(False)
        self.run.changed.connect(self._on_run_clicked)
        self.continue_run.changed.connect(self._on_continue_clicked)
        self.reset_defaults.changed.connect(self._on_reset_defaults)
        self.forget.changed.connect(self._on_reset_defaults)
        self.show_advanced.changed.connect(self._show_advanced)
        self.device.changed.connect(lambda *_: self._apply_machine_defaults())
        self.measure_plan.changed.connect(lambda *_: self.plan_part.measure(self.worker is not None, self.form.options))

    def _on_styles_changed(self) -> None:
        self.regions_panel.refresh()

    @staticmethod
    def _row(name: str, *widgets: Any) -> Container[Any]:
        row = Container(name=name, label="", layout="horizontal", labels=False, widgets=list(widgets))
        row.margins = (0, 0, 0, 0)
        return row

    def _show_advanced(self, show: bool) -> None:
        for w in self._advanced:
            w.visible = bool(show)
        self.plan_table.visible = bool(show) and bool(self.plan_table.value)  # an empty row until measured

    def _show_remembered(self) -> None:
        text = self.settings.summary()
        self.remembered.value = text
        self._remembered_row.visible = bool(text)

    # ------------------------------------------------------------------ choices, devices, defaults

    def reset_choices(self, *args: Any) -> None:
        """Refresh the layer pickers (napari's dock calls this when layers are added, removed, renamed).
        magicgui's reset also puts the Slices choice back to its first value: the user's is kept."""
        slices = self.stack.slices.value if hasattr(self, "stack") else None
        super().reset_choices(*args)
        self.inputs.after_reset()
        if hasattr(self, "stack"):
            self._refresh_stack(self.content.value, slices)

    def _refresh_stack(self, content: Any = None, slices: int | None = None) -> None:
        """The stack choice for the content's axes (``slices``: the one to keep, if still offered),
        and "Run on" with it."""
        self.stack.refresh(content, slices)
        self.run_on_panel.refresh(self.stack.offered)

    @property
    def _gpu(self) -> bool | None:
        return self.machine.gpu

    def _will_use_gpu(self) -> bool:
        return self.machine.will_use_gpu(self.device.value)

    def _apply_machine_defaults(self) -> None:
        self.machine.apply_defaults(self.form, self.settings, self.device.value)

    def _on_probe_done(self, result: dict[str, Any]) -> None:
        if self.controller.closed:
            return
        self.machine.probed(result, self.device, self.settings)
        self._apply_machine_defaults()
        self.memory.refresh()  # a GPU's memory is not known here: the estimate says so

    def _on_reset_defaults(self, *_: Any) -> None:
        with self.settings.quiet():
            for name in self.form.fields:
                self.form.reset(name)
        self.settings.forget()
        self._apply_machine_defaults()

    # ------------------------------------------------------------------ run / stop

    @property
    def worker(self) -> Any:
        return self.controller.worker

    @property
    def _run(self) -> Any:
        return self.controller.run

    def options(self) -> dict[str, Any]:  # type: ignore[override]  # shadows magicgui's Widget.options dict
        """The engine options the fields say (``init`` a string or a layer). Raises OptionError."""
        opts = self.form.options()
        Options(style_scale=opts["style_scale"]).check_scales(len(self.styles_panel.pickers))  # one, or one per style
        if len(self.styles_panel.pickers) > 1:
            opts["style_blend"] = tuple(self.styles_panel.blend())
        mapping = self.regions_panel.mapping()
        if mapping is not None:
            opts["region_styles"] = mapping
        return opts

    def _on_run_clicked(self, *_: Any) -> None:
        if self.worker is not None:
            self.stop()
        else:
            self.start()

    def _continue_source(self) -> Any:
        active = self._viewer.layers.selection.active
        if active is not None and META_KEY in getattr(active, "metadata", {}):
            return active
        last = self.controller.last_pastiche
        if last is not None and last in self._viewer.layers:
            return last
        return next((lay for lay in self.inputs.image_layers() if META_KEY in lay.metadata), None)

    def _on_continue_clicked(self, *_: Any) -> None:
        if self.worker is not None:
            return
        src = self._continue_source()
        if src is None:
            notify.error(
                "Nothing to continue from: press Run first; Continue starts a new run from the "
                "pastiche it made (or from the pastiche layer selected in the layer list)."
            )
            return
        self.start(init_layer=src)

    def _checked_layers(self) -> tuple[Any, Any]:
        """The picked content and style layers; ValueError saying what to pick otherwise."""
        content, style = self.content.value, self.style.value
        if content is None or style is None:
            which = "a content" if content is None else "a style"
            raise ValueError(
                f"Pick {which} image in the Style Transfer panel. No image layer? Open one (File > "
                "Open), or load the samples: File > Open Sample > Neural Style Transfer."
            )
        if same_layer(content, style):
            raise ValueError(
                f"Content and style are the same layer ({content.name!r}); pick a different image "
                "as the style (e.g. a painting)."
            )
        self.styles_panel.check()
        self.regions_panel.check()
        self.mask_panel.check()
        extra = [(lay, "style") for lay in self.styles_panel.layers()[1:]]
        extra += [(lay, "Labels") for lay in [*self.regions_panel.layers_in_use(), *self.mask_panel.in_use()]]
        for lay, what in ((content, "content"), (style, "style"), *extra):
            if lay not in self._viewer.layers:
                self.reset_choices()
                raise ValueError(f"The {what} layer {lay.name!r} is no longer in the viewer; pick another one.")
        return content, style

    def _request(self, content: Any, opts: dict[str, Any], init_layer: Any) -> RunRequest | None:
        """What to run: the slice shown, or every slice (a stack); None (and an error shown) when the
        scheduler to run a stack on is not valid."""
        stack = self.stack.request(init_layer)  # None: the slice shown
        settings = {**Options().as_dict(), **opts}
        if stack is None:
            settings["init"] = f"layer: {init_layer.name}" if init_layer is not None else opts["init"]
        elif not self.run_on_panel.add_to(settings):
            return None
        return RunRequest(
            content,
            self.styles_panel.layers(),
            opts,
            settings,
            init=init_layer if stack is None else None,
            regions=self.regions.value,
            style_regions=self.regions_panel.style_sources(),
            mask=self.mask.value,
            **(stack or {}),
        )

    def start(self, init_layer: Any = None) -> bool:
        """Start a run (as the Run button does); False (and a notification) if it cannot start."""
        if self.worker is not None:
            return False  # one run at a time
        try:
            content, style = self._checked_layers()
            opts = self.options()
            settings = self.live.settings(dict(opts))  # what a change during the run is compared with
            init_layer = _start_layer(opts, init_layer, self._viewer.layers)
        except (OptionError, ValueError) as exc:
            notify.error(str(exc))
            return False
        req = self._request(content, opts, init_layer)
        if req is None:
            return False
        plan = build_plan(req, tuple(self._viewer.dims.point), tuple(self._viewer.dims.displayed))
        sink: Any = None if plan.stack_axis is None else self.stack.sink(plan, req.previous)
        if plan.stack_axis is not None and sink is None:
            return False
        if plan.stack_axis is None and init_layer is None:
            sink = self.preview.sink_for(plan)  # Run paints over the preview
        sources = {"content": content, "style": style, "init": req.init, "styles": list(req.styles[1:])}
        self.controller.start(plan, {**sources, "regions": req.regions, "mask": req.mask}, sink=sink)
        self.live.started(settings, live=plan.stack_axis is None)
        return True

    def stop(self, reason: str | None = None) -> None:
        """End the current run within one evaluation; the pastiche so far is kept."""
        if self.controller.stop(reason):
            self.set_stopping()

    # ------------------------------------------------------------------ what the controller shows

    def show_status(self, text: str) -> None:
        self.status.value = text

    def set_running(self) -> None:
        self.run.text, self.run.enabled, self.continue_run.enabled = "Stop", True, False
        self.run.tooltip = "Stop the run now; the pastiche so far is kept."

    def set_stopping(self) -> None:
        self.run.enabled = False  # until the worker has finished
        self.run.text = "Stopping ..."

    def set_idle(self) -> None:
        self.run.text, self.run.enabled, self.continue_run.enabled = "Run", True, True
        self.run.tooltip = RUN_TIP


class _Buttons:
    """The widget's own fields beside the generated form: Advanced, Reset, Run, Continue, status."""

    def __init__(self) -> None:
        self.show = CheckBox(
            name="show_advanced",
            text="Advanced settings",
            value=False,
            tooltip="Show the network layers, optimiser, initialisation, scales ...",
        )
        self.reset = PushButton(
            name="reset_defaults",
            text="Reset all settings to defaults",
            tooltip="Forget the remembered settings and use the defaults for this machine.",
        )
        self.run = PushButton(name="run", text="Run", tooltip=RUN_TIP)
        self.again = PushButton(
            name="continue_run",
            text="Continue",
            tooltip="Start a new run from the last pastiche (or from the pastiche layer "
            "selected in the layer list), with the settings above.",
        )
        self.remembered = Label(
            name="remembered",
            value="",
            tooltip="These fields show values you set earlier "
            "(remembered between sessions); Reset forgets them and uses the defaults.",
        )
        self.forget = PushButton(name="forget", text="Reset", tooltip="Forget the remembered settings.")
        self.status = Label(name="status", label="", value="", tooltip="Progress of the current or last run")
        self.status.native.setWordWrap(True)
        self.remembered.native.setWordWrap(True)


def _start_layer(opts: dict[str, Any], init_layer: Any, layers: Any) -> Any:
    """The layer a run starts from (Continue's, or the one picked under Start from), None for
    none; ``opts["init"]`` becomes "content" then. ValueError if that layer left the viewer."""
    if init_layer is None and not isinstance(opts["init"], str):
        init_layer = opts["init"]
    if init_layer is not None and init_layer not in layers:
        raise ValueError("The layer to start from is no longer in the viewer; pick another one under Start from.")
    opts["init"] = "content" if init_layer is not None else opts["init"]
    return init_layer


def _controls_panels(self: StyleTransferWidget, viewer: Any) -> None:
    """The widget's panels of several styles with weights, regions from a Labels layer, and the
    layer that limits which pixels are restyled."""
    self.styles_panel = StylesPanel(self.style, self.inputs.image_choices, self._on_styles_changed)
    self.regions_panel = RegionsPanel(
        viewer, lambda: [getattr(p.value, "name", "?") for p in self.styles_panel.pickers]
    )
    self.styles, self.style_blend, self.add_style = (
        self.styles_panel.container,
        self.styles_panel.style_blend,
        self.styles_panel.add,
    )
    self.regions, self.region_styles, self.style_regions = (
        self.regions_panel.picker,
        self.regions_panel.rows,
        self.regions_panel.sources,
    )
    self.style.changed.connect(lambda *_: self._on_styles_changed())
    self.mask_panel = MaskPanel(viewer)  # "Restyle only": a Labels or Shapes layer
    self.mask = self.mask_panel.picker
