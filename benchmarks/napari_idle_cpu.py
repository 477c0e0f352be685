"""napari's own CPU share in an idle viewer under Xvfb (Mesa's software OpenGL), before, with and
after a ``napari.utils.progress`` bar: why the widget shows no activity-dock progress bar.

    python benchmarks/napari_idle_cpu.py

Run on this 2-core EPYC on 2026-11-30, three times: idle 0.9-4.4 %, with a progress bar 21-55 %,
after closing it 22-56 % (docs/display_cost.md).
"""

import os
import tempfile
import time


def main() -> None:
    os.environ["NAPARI_NST_CONFIG_DIR"] = tempfile.mkdtemp()
    from pyvirtualdisplay import Display

    disp = Display(visible=False, size=(1600, 1000), color_depth=24)
    disp.start()
    from napari.utils import progress
    from qtpy.QtWidgets import QApplication

    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 920)
    app = QApplication.instance()

    def spin(seconds: float, label: str) -> None:
        c0, t0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            app.processEvents()
            time.sleep(0.002)
        print(f"{label}: napari's CPU share {(time.process_time() - c0) / seconds:.3f}", flush=True)

    spin(4, "idle")
    spin(4, "idle again")
    bar = progress(total=100, desc="x")
    spin(4, "with a progress bar")
    bar.close()
    spin(3, "closed, 0-3 s")
    spin(5, "closed, 3-8 s")
    viewer.close()
    disp.stop()


if __name__ == "__main__":
    main()
