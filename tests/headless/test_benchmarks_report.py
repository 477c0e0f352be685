"""The benchmark harness (``python -m benchmarks``): its list, its results files and the Benchmarks page.

No benchmark runs here (tests/headless/test_benchmarks_dry.py runs each at a toy size); the page is
rendered from a small fake results folder.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import BENCHMARKS, report
from benchmarks import _harness as H
from benchmarks import cpu as bench_cpu

ROOT = Path(__file__).resolve().parents[2]

AVX512 = {
    "cpu": "Test CPU 9000",
    "cores": 8,
    "flags": {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx": False},
    "env": {},
    "device": "cpu",
    "torch": "2.99",
    "torch_threads": 8,
    "load_average": [3.25, 2.0, 1.0],
}
AVX2_EMULATED = {**AVX512, "env": dict(H.AVX2_ENV), "torch_threads": 1}
H200 = {"cpu": "Host CPU", "cores": 16, "device": "cuda", "gpu": "NVIDIA H200", "gpu_memory_gib": 139.8, "cuda": "13.0"}


def _run(run_id, date, machine, command, figures, **kw):
    return {"id": run_id, "date": date, "machine": machine, "command": command, "args": {}, "figures": figures, **kw}


def _fig(name, ratio, part="", **kw):
    return H.figure(name, ratio, "textbook", 1.5, "s", part=part, **kw)


@pytest.fixture
def results(tmp_path) -> Path:
    """Two benchmarks on three machine classes; cpu's per-eval part run twice, its memory part once."""
    d = tmp_path / "results"
    d.mkdir()
    cpu_runs = [
        _run(
            "a",
            "2026-01-01T00:00:00+00:00",
            AVX512,
            "python -m benchmarks cpu --old",
            [_fig("per eval", 0.9, "per-eval")],
        ),
        _run(
            "b",
            "2026-01-02T00:00:00+00:00",
            AVX512,
            "python -m benchmarks cpu --parts memory",
            [_fig("peak memory", 0.55, "memory")],
        ),
        _run(
            "c",
            "2026-01-03T00:00:00+00:00",
            AVX512,
            "python -m benchmarks cpu --parts per-eval --new",
            [_fig("per eval", 0.5, "per-eval"), _fig("per eval, float32", 0.75, "per-eval")],
        ),
        _run(
            "d",
            "2026-01-04T00:00:00+00:00",
            AVX2_EMULATED,
            "python -m benchmarks cpu --isa avx2",
            [_fig("x", 0.77, "per-eval")],
        ),
        {  # a dry run: never on the page
            **_run(
                "e",
                "2026-01-05T00:00:00+00:00",
                AVX512,
                "python -m benchmarks cpu --dry-run",
                [_fig("per eval", 9.0, "per-eval")],
            ),
            "args": {"dry_run": True},
        },
    ]
    (d / "cpu.json").write_text(json.dumps({"benchmark": "cpu", "runs": cpu_runs}))
    gpu = _run(
        "g",
        "2025-12-01T00:00:00+00:00",
        H200,
        "python old/gpu.py --out /x",
        [_fig("512 px: time | speed", 0.39, "sizes")],
        rerun="python -m benchmarks gpu",
    )
    (d / "gpu.json").write_text(json.dumps({"benchmark": "gpu", "runs": [gpu]}))
    (d / "old_format.json").write_text(json.dumps({"machine": "x", "rows": []}))  # the archive's kind: skipped
    return d


def test_page_has_one_table_per_machine_class_with_the_newest_run_of_each_part(results):
    page = report.render(results)
    headings = [line for line in page.splitlines() if line.startswith("## ")]
    assert headings == [
        "## CPU, AVX-512 with bf16",
        "## CPU, AVX2 (emulated with ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2)",
        "## NVIDIA H200",
    ]
    avx512 = page.split("## CPU, AVX-512 with bf16")[1].split("## ")[0]
    # per-eval: only the newest run (c), both its figures; memory: run b, the only one with that part
    assert "| cpu (per-eval) | per eval | 0.50x | textbook | 1.5 s | 8 | (1) |" in avx512
    assert "| cpu (per-eval) | per eval, float32 | 0.75x |" in avx512
    assert "| cpu (memory) | peak memory | 0.55x | textbook | 1.5 s | 8 | (2) |" in avx512
    assert "0.90x" not in avx512 and "--old" not in avx512
    assert "1. `python -m benchmarks cpu --parts per-eval --new`" in avx512
    assert "2. `python -m benchmarks cpu --parts memory`" in avx512
    assert "Machine: Test CPU 9000, 8 cores; torch 2.99." in avx512
    # the emulated AVX2 class: its own table, its thread count
    assert "| cpu (per-eval) | x | 0.77x | textbook | 1.5 s | 1 | (1) |" in page
    # a GPU row: the command recorded then and today's; a '|' in a name does not break the table
    gpu = page.split("## NVIDIA H200")[1]
    assert "| gpu (sizes) | 512 px: time \\| speed | 0.39x |" in gpu
    assert "1. `python old/gpu.py --out /x`; now: `python -m benchmarks gpu`" in gpu
    assert "Machine: NVIDIA H200 (139.8 GiB), CUDA 13.0." in gpu


def test_page_shows_no_dry_runs_no_load_average_and_no_dates(results):
    page = report.render(results)
    assert "9.00x" not in page and "--dry-run" not in page
    assert "load" not in page.lower() and "3.25" not in page
    assert "2026" not in page and "2025" not in page


def test_report_command_writes_the_page(results, tmp_path):
    out = tmp_path / "benchmarks.md"
    assert report.main(["--results-dir", str(results), "--out", str(out)]) == 0
    assert out.read_text() == report.render(results)


def test_an_empty_results_folder_gives_a_page_that_says_so(tmp_path):
    assert "No results yet" in report.render(tmp_path)


def test_the_quality_runs_contact_sheets_are_on_the_page(tmp_path):
    """Pictures a run wrote under docs/ (its module's ``pictures``) follow its table; missing ones not."""
    args = {"parts": "quality,timing", "pairs": "tubingen:starry_night,photo:nowhere", "sheets": "docs/images"}
    run = _run("q", "2026-01-01T00:00:00+00:00", AVX512, "python -m benchmarks quality", [_fig("x", 0.9, "quality")])
    (tmp_path / "quality.json").write_text(json.dumps({"benchmark": "quality", "runs": [{**run, "args": args}]}))
    page = report.render(tmp_path)
    assert "](images/losses-tubingen-starry_night.png)" in page
    assert "losses-photo-nowhere" not in page


def test_a_broken_results_file_is_named(tmp_path):
    (tmp_path / "cpu.json").write_text("{not json")
    with pytest.raises(H.BenchmarkError, match="cpu.json is not valid JSON"):
        report.render(tmp_path)


def test_the_committed_page_is_what_the_committed_results_give():
    """docs/benchmarks.md is generated: rerun ``python -m benchmarks report`` after a benchmark."""
    assert (ROOT / "docs" / "benchmarks.md").read_text() == report.render(H.RESULTS)


def test_list_names_every_benchmark_and_the_report():
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--list"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    names = [line.split()[0] for line in p.stdout.splitlines()]
    assert names == [*BENCHMARKS, "report"]
    assert {"cpu", "gpu", "tiles", "stack", "batch"} <= set(names)


def test_an_unknown_benchmark_is_an_error_that_lists_them():
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks", "cpux"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 2 and "no benchmark 'cpux'" in p.stderr and "cpu, gpu" in p.stderr


def test_runs_are_appended_and_a_checkpoint_is_replaced_by_its_final_run(tmp_path):
    args = argparse.Namespace(size=48, dry_run=False, _checkpoint=None)
    first = H.Recorder("demo", ["--size", "48"], args, tmp_path)
    first.checkpoint({"figures": [_fig("a", 0.5)], "part1": 1})
    first.checkpoint({"figures": [_fig("a", 0.5), _fig("b", 0.6)], "part1": 1, "part2": 2}, final=True)
    H.Recorder("demo", [], args, tmp_path).checkpoint({"figures": []}, final=True)
    runs = json.loads((tmp_path / "demo.json").read_text())["runs"]
    assert len(runs) == 2
    run = runs[0]
    assert run["complete"] and [f["name"] for f in run["figures"]] == ["a", "b"]
    assert run["results"] == {"part1": 1, "part2": 2}
    assert run["command"] == "python -m benchmarks demo --size 48"
    assert run["args"] == {"size": 48, "dry_run": False}
    assert run["date"].endswith("+00:00")
    m = run["machine"]
    assert {"cpu", "flags", "cores", "torch", "torch_threads", "device", "load_average", "class"} <= set(m)
    assert set(m["flags"]) == {"avx2", "avx512f", "avx512_bf16", "amx"}


def test_machine_classes():
    assert H.machine_class(AVX512) == "CPU, AVX-512 with bf16"
    assert H.machine_class(AVX2_EMULATED).startswith("CPU, AVX2 (emulated with ONEDNN_MAX_CPU_ISA=AVX2")
    assert H.machine_class({**AVX512, "flags": {**AVX512["flags"], "amx": True}}) == "CPU, AVX-512 with AMX"
    assert H.machine_class({**AVX512, "flags": {"avx2": True}}) == "CPU, AVX2"
    assert H.machine_class(H200) == "NVIDIA H200"


def test_interleaved_repeats_give_medians_and_median_ratios_of_the_same_repeat():
    values = {"baseline": iter([1.0, 10.0, 4.0]), "fast": iter([0.5, 1.0, 8.0])}
    order = []

    def fn(name):
        def call():
            order.append(name)
            return next(values[name])

        return call

    res = H.interleaved({"baseline": fn("baseline"), "fast": fn("fast")}, 3, log=False)
    assert order == ["baseline", "fast"] * 3
    assert res["baseline"]["median"] == 4.0 and res["fast"]["median"] == 1.0
    assert res["fast"]["ratio"] == 0.5  # the median of 0.5, 0.1 and 2.0, not the medians' 1.0 / 4.0
    assert res["fast"]["all"] == [0.5, 1.0, 8.0]


def test_missing_shared_pictures_and_weights_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(H, "SHARED", tmp_path)
    with pytest.raises(H.BenchmarkError, match="--dry-run"):
        H.shared_image("tubingen")
    with pytest.raises(H.BenchmarkError, match="--weights random"):
        H.weights_file(str(tmp_path / "none.pth"))
    with pytest.raises(H.BenchmarkError, match="generated:content"):
        H.load_image("generated:nothing")


def test_generated_pictures_are_fixed_rgb_images():
    a, b = H.generated_image("content"), H.generated_image("content")
    assert a.dtype.name == "uint8" and a.shape == (384, 512, 3) and (a == b).all()
    assert H.generated_image("style").shape == (400, 400, 3)


def test_variants_combine_presets_and_levers():
    vs = bench_cpu.variants("default,float32+no Winograd+float32 L-BFGS history")
    assert vs["default"] == {}
    assert vs["float32+no Winograd+float32 L-BFGS history"] == {
        "precision": "float32",
        "levers": {"winograd": False, "history_dtype": "float32"},
    }
    assert bench_cpu.variants('{"mine": {"pyramid": 0}}') == {"mine": {"pyramid": 0}}
    with pytest.raises(H.BenchmarkError, match="no variant 'fast'"):
        bench_cpu.variants("fast")


def test_levers_reach_the_engine_inside_the_block_only():
    """A lever set with the harness is what the engine reads in the block, and gone after it."""
    from napari_nst.core.compute import memory

    default = memory._history(False)
    with H.levers(history_size=3, lbfgs=None):
        assert memory._history(False) == 3
    assert memory._history(False) == default
    with pytest.raises(H.BenchmarkError, match="unknown lever"):
        H.levers(history=3)
