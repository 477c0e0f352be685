"""Which devices the widget offers, and the fields whose default depends on the device (size, steps).

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
