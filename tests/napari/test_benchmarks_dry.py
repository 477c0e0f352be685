"""The napari benchmarks run end to end at a toy size (``--dry-run``), so that they cannot rot.

widget_input runs in this process (napari's layer models; it must not import torch), responsiveness
in a child process of its own (a whole viewer with the widget, on pytest-xvfb's display).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import run_benchmark

ROOT = Path(__file__).resolve().parents[2]


def test_widget_input_dry_run_records_ratios_without_torch(tmp_path):
    run_benchmark("widget_input", ["--dry-run", "--results-dir", str(tmp_path)])
    (run,) = json.loads((tmp_path / "widget_input.json").read_text())["runs"]
    assert "torch" not in sys.modules
    assert run["machine"]["torch_threads"] is None and run["machine"]["torch"]
    names = [f["name"] for f in run["figures"]]
    assert len(names) == 6 and "400x300 uint8 RGB layer at 64 px: bytes sent to the engine process" in names
    for f in run["figures"]:
        assert 0 < f["ratio"] and f["against"] == "a full-resolution float32 copy"
    assert all(f["ratio"] < 1 for f in run["figures"] if "bytes" in f["name"])  # a shrunk slice is smaller


@pytest.mark.timeout(600)
def test_responsiveness_dry_run_records_the_event_loop_gaps(tmp_path, vgg16_weights):
    cmd = [sys.executable, "-m", "benchmarks", "responsiveness", "--dry-run", "--weights", str(vgg16_weights)]
    cmd += ["--results-dir", str(tmp_path), "--screenshot", str(tmp_path / "shot.png")]
    p = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=580)
    assert p.returncode == 0, p.stderr[-3000:]
    (run,) = json.loads((tmp_path / "responsiveness.json").read_text())["runs"]
    res = run["results"]
    assert res["outcome"] == "finished" and res["steps"] == 3 and res["size"] == 32
    assert res["baseline_gaps"]["n"] > 0 and res["run_gaps"]["n"] > 0
    gap = next(f for f in run["figures"] if f["name"].endswith("event-loop gap, 99th percentile"))
    assert gap["ratio"] > 0 and gap["against"].startswith("no run")
    assert (tmp_path / "shot.png").stat().st_size > 1000  # README's picture of the widget
