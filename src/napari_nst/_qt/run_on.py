"""The widget's "Run on" choice for a stack: this machine, or a dask scheduler's workers.

Shown with the stack choice (when the content has axes to stack along). The choice and the address
are remembered between sessions (the widget registers them with its remembered settings). A
stack run on a scheduler is :class:`napari_nst._run.dask_stack.DaskStackProcess`; the address
reaches it as the plan's ``run_on`` setting (also kept in the pastiche layer's metadata).
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import ComboBox, LineEdit

from napari_nst._qt import notify
from napari_nst._run.dask_stack import check_address

THIS_MACHINE = "This machine"
SCHEDULER = "A dask scheduler"


class RunOnPanel:
    """The "Run on" picker and the scheduler address field (main thread only)."""

    def __init__(self) -> None:
        self.run_on = ComboBox(
            name="run_on",
            label="Run on",
            choices=[THIS_MACHINE, SCHEDULER],
            value=THIS_MACHINE,
            tooltip="Where a stack run is made: on this machine (frame after frame), or on the workers "
            "of a dask scheduler (contiguous chunks of frames on different workers; docs/distributed.md).",
        )
        self.address = LineEdit(
            name="scheduler_address",
            label="Scheduler",
            value="",
            tooltip="The dask scheduler's address, e.g. tcp://10.0.0.5:8786 (`dask scheduler` prints it). Its "
            "workers need napari-nst, torch and the weights file.",
        )
        self._offered = False
        self.run_on.changed.connect(lambda *_: self.refresh())

    def widgets(self) -> list[Any]:
        return [self.run_on, self.address]

    def refresh(self, offered: bool | None = None) -> None:
        """Shown when a stack run is offered; the address only when a scheduler is picked."""
        self._offered = self._offered if offered is None else bool(offered)
        self.run_on.visible = self._offered
        self.address.visible = self._offered and self.run_on.value == SCHEDULER

    def scheduler(self) -> str | None:
        """The scheduler address for a stack run (None: this machine); ValueError for a bad one."""
        if self.run_on.value != SCHEDULER:
            return None
        return check_address(str(self.address.value))

    def add_to(self, settings: dict[str, Any]) -> bool:
        """``settings["run_on"]``: the scheduler's address for a stack run on one; False (and an
        error shown) when the address is missing or malformed."""
        try:
            address = self.scheduler()
        except ValueError as exc:
            notify.error(str(exc))
            return False
        if address:
            settings["run_on"] = address
        return True
