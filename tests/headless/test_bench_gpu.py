"""benchmarks/gpu.py's dry run: the script a GPU machine runs once works end to end (CPU, toy size)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gpu_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu_script", ROOT / "benchmarks" / "gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_writes_results_from_paths_given_as_arguments(gpu_bench, tmp_path, content, style, vgg16_random):
    import torch

    cp, sp = tmp_path / "c.png", tmp_path / "s.png"
    Image.fromarray(content).resize((96, 72)).save(cp)
    Image.fromarray(style).resize((80, 80)).save(sp)
    before = torch.backends.cudnn.benchmark
    try:
        code = gpu_bench.main(
            [
                "--dry-run",
                "--weights",
                str(vgg16_random),
                "--content",
                str(cp),
                "--style",
                str(sp),
                "--out",
                str(tmp_path / "out"),
            ]
        )
    finally:
        torch.backends.cudnn.benchmark = before
    assert code == 0
    res = json.loads((tmp_path / "out" / "gpu_results.json").read_text())
    (row,) = res["rows"]
    assert row["size"] == 64 and row["steps"] == 4 and row["shape"] == [48, 64]
    for side in ("baseline", "napari-nst"):
        assert len(row[side]["all_s"]) == 2 and row[side]["min_s"] <= row[side]["median_s"]
        assert row[side]["objective"] > 0
    assert row["napari-nst"]["precision"] in ("float32", "bfloat16")
    assert {"tf32_matmul", "tf32_cudnn", "cudnn.benchmark"} <= set(res["machine"])
    md = (tmp_path / "out" / "gpu_results.md").read_text()
    assert "| 64 | 64x48 | 4 |" in md
    # the tiles section: the whole image, tiles of --tile px, and the engine's own choice under --tile-max-memory
    whole, tiled, auto = res["tiles"]
    assert all("tile_size" in r for r in res["tiles"]), res["tiles"]  # not skipped, no error
    assert (whole["tile_size"], tiled["tile_size"], auto["tile_size"]) == (0, 96, 96)
    assert auto["max_memory"] == "370MB" and "tiles of 96 px" in auto["note"]
    assert all(r["shape"] == [96, 128] and r["steps"] == 2 and r["s_per_eval"] > 0 for r in res["tiles"])
    assert "| 128 | 96 | - | 96 |" in md and "## Tiles" in md


def test_weights_and_pictures_can_come_from_the_environment(gpu_bench, monkeypatch):
    monkeypatch.setenv("NAPARI_NST_WEIGHTS", "/w.pth")
    monkeypatch.setenv("NST_CONTENT", "/c.jpg")
    monkeypatch.setenv("NST_STYLE", "/s.jpg")
    monkeypatch.setenv("OUT", "/out")
    args = gpu_bench.parse([])
    assert (args.weights, args.content, args.style, args.out) == ("/w.pth", "/c.jpg", "/s.jpg", "/out")
    assert args.sizes == "512,1024,2048" and args.steps == 500
    assert args.tile_sizes == "2048,4096" and args.tile == 1024
