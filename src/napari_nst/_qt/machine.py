"""Which devices the widget offers, the fields whose default depends on the device (size, steps), and
the Advanced button that measures the fastest compute plan on this machine (:class:`PlanPart`).

The napari process never imports torch: a quick guess first (``_devices.quick_device_guess``), then
the probe's answer from a child process (``probe.start_probe``).
"""

from __future__ import annotations

from typing import Any

from napari_nst.core.options import Options, spec


class MachinePart:
    """The widget's view of this machine's devices: ``gpu`` None (not known yet), False or True."""

    def __init__(self, gpu: bool | None) -> None:
        self.gpu = gpu
        self.gpu_names: list[str] = []

    def device_choices(self) -> list[str]:
        if self.gpu is False:
            return ["auto", "cpu"]
        return [*(spec("device").choices or ()), *(f"cuda:{i}" for i in range(1, len(self.gpu_names)))]

    def will_use_gpu(self, device: str) -> bool:
        return bool(self.gpu) if device == "auto" else device != "cpu"

    def apply_defaults(self, form: Any, settings: Any, device: str) -> None:
        """Fields whose default is "by device" (size, steps) that the user did not set."""
        machine = Options().for_device(self.will_use_gpu(device))
        with settings.quiet():
            for name, s in form.specs.items():
                if (
                    s.default is None
                    and s.kind == "int"
                    and name not in settings.touched
                    and getattr(machine, name) is not None
                ):
                    form.fields[name].value = getattr(machine, name)

    def probed(self, result: dict[str, Any], device_field: Any, settings: Any) -> None:
        """The probe's answer: the GPUs found, the device choices and their tooltip."""
        self.gpu_names = list(result.get("cuda") or [])
        self.gpu = bool(self.gpu_names or result.get("mps"))
        with settings.quiet():
            current = device_field.value
            device_field.choices = self.device_choices()
            if current in device_field.choices:
                device_field.value = current
        names = ", ".join(self.gpu_names) or ("Apple MPS" if result.get("mps") else "none found")
        device_field.tooltip = f"{spec('device').help} GPUs here: {names}."


#: the button's text and tooltip
MEASURE_TEXT = "Measure the fastest plan"
MEASURE_TIP = (
    "Time the ways this machine can run the network (precision, memory layout, convolution algorithm, "
    "pooling) at the current Size and Device, a few seconds, and keep the fastest for later runs; the "
    "first run on a machine does this by itself. Shows the table."
)


class PlanPart:
    """Advanced: the "Measure the fastest plan" button and the table it shows.

    The measurement runs in the engine process (``runner.measure_plans``; this process never
    imports torch), from a thread; its answer reaches the main thread through a Qt signal.
    """

    def __init__(self) -> None:
        from magicgui.widgets import Label, PushButton

        self.button = PushButton(name="measure_plan", text=MEASURE_TEXT, tooltip=MEASURE_TIP)
        self.table = Label(name="plan_table", label="", value="")
        self.table.native.setWordWrap(False)
        self.table.native.setStyleSheet("font-family: monospace;")
        self.table.visible = False
        self._emitter: Any = None  # keeps the signal carrier alive until the answer came

    def widgets(self) -> list[Any]:
        return [self.button, self.table]

    @property
    def busy(self) -> bool:
        return self._emitter is not None

    def measure(self, busy: bool, options: Any) -> None:
        """The button: time the compute plans for the form's ``options()`` (Size, Device) in the engine
        process and show the table; not beside a run (``busy``), which would time both."""
        from napari_nst._qt import notify

        if busy:
            notify.info("Stop the run first: a measurement beside it would time both.")
            return
        try:
            opts = options()
        except ValueError as exc:  # OptionError is a ValueError
            notify.error(str(exc))
            return
        self.start(opts, notify.error)

    def start(self, options: dict[str, Any], on_error: Any) -> bool:
        """Measure for ``options`` (the form's); False if a measurement is running already."""
        if self.busy:
            return False
        from qtpy.QtCore import QObject, Signal  # type: ignore[attr-defined]

        from napari_nst._run.runner import measure_plans

        class _Emitter(QObject):
            done = Signal(object)

        emitter = _Emitter()
        emitter.done.connect(lambda result: self._done(result, on_error))
        self._emitter = emitter
        self.button.enabled, self.button.text = False, "Measuring ..."
        keys = ("size", "device", "model", "weights", "pooling", "content_layers", "style_layers")
        opts = {k: options[k] for k in keys if k in options}

        def work() -> None:
            try:
                result: Any = measure_plans(opts)
            except Exception as exc:  # bad options, the engine process failed
                result = exc
            try:
                emitter.done.emit(result)
            except RuntimeError:  # the widget is gone
                pass

        import threading

        threading.Thread(target=work, name="napari-nst-measure-plan", daemon=True).start()
        return True

    def _done(self, result: Any, on_error: Any) -> None:
        self._emitter = None
        self.button.enabled, self.button.text = True, MEASURE_TEXT
        if isinstance(result, BaseException):
            on_error(f"Could not measure the compute plan: {result}")
            return
        path = result.get("path", "")
        self.table.value = result.get("text", "") + (f"\nKept in {path}." if path else "")
        self.table.visible = True
