"""Every CPU benchmark runs end to end at a toy size (``--dry-run``: 32-128 px, 2-4 evaluations,
generated pictures, seeded random weights, one thread), so that the harness cannot rot. The numbers
mean nothing; what is checked is that each run is recorded with figures against its baseline.

(gpu's dry run: test_bench_gpu.py; widget_input and responsiveness: tests/napari/test_benchmarks_dry.py.)
"""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.__main__ import run_benchmark

#: benchmark -> extra arguments of its dry run (every part of it)
DRY = {
    "cpu": [],
    "tiles": ["--parts", "quality,rss"],
    "stack": ["--parts", "consistency,edge"],
    "batch": [],
    "controls": [],
    "strength": ["--parts", "strip,blend,border,sizes,dots"],
    "quality": [],
    "memory_growth": [],
    "stop_latency": [],
    "live_update": [],
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(DRY))
def test_dry_run_records_figures(name, tmp_path, vgg16_random):
    if name == "batch":
        pytest.importorskip("distributed")
    run_benchmark(name, ["--dry-run", "--weights", str(vgg16_random), "--results-dir", str(tmp_path), *DRY[name]])
    (run,) = json.loads((tmp_path / f"{name}.json").read_text())["runs"]
    assert run["complete"] and run["args"]["dry_run"] and run["args"]["threads"] == 1
    assert run["command"].startswith(f"python -m benchmarks {name} --dry-run")
    assert run["machine"]["torch_threads"] == 1 and run["machine"]["class"].startswith("CPU")
    figures = run["figures"]
    assert figures, run
    for f in figures:
        assert f["name"] and (f["ratio"] is None or (math.isfinite(f["ratio"]) and f["ratio"] > 0)), f
        assert f["ratio"] is None or f["against"], f
    assert any(f["ratio"] is not None for f in figures)
    if name in ("cpu", "tiles"):  # every part ran and is tagged
        parts = {f["part"] for f in figures}
        cpu = {"per-eval", "quality", "reach", "memory", "scaling", "kernels"}
        assert parts == (cpu if name == "cpu" else {"quality", "rss"})


def test_cpu_figures_are_against_the_textbook_measured_in_the_same_run(tmp_path, vgg16_random):
    argv = ["--dry-run", "--weights", str(vgg16_random), "--results-dir", str(tmp_path), "--parts", "per-eval"]
    run_benchmark("cpu", [*argv, "--variants", "default,float32"])
    (run,) = json.loads((tmp_path / "cpu.json").read_text())["runs"]
    times = run["results"]["per-eval"]["times"]
    assert list(times) == ["baseline", "default", "float32"] and len(times["baseline"]["all"]) == 2
    for f, name in zip(run["figures"], ("default", "float32"), strict=True):
        assert f["against"] == "textbook" and f["name"].endswith(name)
        ratios = [v / b for v, b in zip(times[name]["all"], times["baseline"]["all"], strict=True)]
        assert f["ratio"] == pytest.approx(sorted(ratios)[0] / 2 + sorted(ratios)[1] / 2)
        assert f["value"] == times[name]["median"]


def test_cpu_kernels_part_sets_per_call_against_kept_kernels_in_float32_winograd(tmp_path, vgg16_random, monkeypatch):
    from benchmarks import cpu

    seen = []
    real = cpu.time_nst

    def spy(prob, variant, size, *a, **k):
        seen.append((size, variant))
        return real(prob, variant, size, *a, **k)

    monkeypatch.setattr(cpu, "time_nst", spy)
    argv = ["--dry-run", "--weights", str(vgg16_random), "--results-dir", str(tmp_path), "--parts", "kernels"]
    run_benchmark("cpu", [*argv, "--kernel-levers", '{"winograd_min": 128}'])
    (run,) = json.loads((tmp_path / "cpu.json").read_text())["runs"]
    res = run["results"]["kernels"]
    assert res["levers"] == {"winograd_wide": True, "winograd_min": 128}
    # two interleaved repeats, kept then per call, both float32 with the Winograd plan
    keeps = [v["levers"]["keep_kernels"] for _, v in seen]
    assert keeps == [True, False, True, False] and {s for s, _ in seen} == {48}
    assert all(v["precision"] == "float32" and v["levers"]["winograd_min"] == 128 for _, v in seen)
    (f,) = run["figures"]
    times = res["times"]["48x36"]
    ratios = [c / k for c, k in zip(times["per call"]["all"], times["kept"]["all"], strict=True)]
    assert f["against"] == "kernels kept" and f["part"] == "kernels"
    assert f["ratio"] == pytest.approx(sum(ratios) / 2) and f["value"] == times["per call"]["median"]


def test_cpu_memory_is_the_median_of_interleaved_repeats(tmp_path, vgg16_random):
    argv = ["--dry-run", "--weights", str(vgg16_random), "--results-dir", str(tmp_path), "--parts", "memory"]
    run_benchmark("cpu", [*argv, "--mem-variants", "default,float32"])
    (run,) = json.loads((tmp_path / "cpu.json").read_text())["runs"]
    res = run["results"]["memory"]
    assert res["repeats"] == 2 and len(res["baseline"]) == 2
    for f, name in zip(run["figures"], ("default", "float32"), strict=True):
        reps = res["rows"][name]["repeats"]
        ratios = [n["peak_rss"] / b["peak_rss"] for n, b in zip(reps, res["baseline"], strict=True)]
        assert f["name"].endswith(f": {name}") and "median of 2" in f["name"]
        assert f["ratios"] == pytest.approx(ratios)
        assert f["ratio"] == pytest.approx(sum(ratios) / 2)
        assert f["value"] == pytest.approx(sum(n["peak_rss"] for n in reps) / 2 / 2**20)


def test_a_child_process_runs_the_function_and_returns_its_result(vgg16_random):
    """What real runs use for peak memory (dry runs call the function in their own process)."""
    from benchmarks import _harness as H

    inputs = {"content": "generated:content", "style": "generated:style", "weights": str(vgg16_random)}
    spec = {"side": "napari-nst", "size": 32, "steps": 2, "threads": 1, "inputs": inputs, "variant": {}}
    res = H.run_child("benchmarks.cpu:memory_child", spec)
    assert res["side"] == "napari-nst" and res["shape"] == [24, 32] and res["steps"] == 2
    assert res["peak_rss"] > 50 * H.MiB and res["objective"] > 0


def test_a_failing_child_process_says_why():
    from benchmarks import _harness as H

    with pytest.raises(H.BenchmarkError, match="(?s)exit 1.*no_such_function"):
        H.run_child("benchmarks.cpu:no_such_function", {})


def test_cpu_memory_repeats_below_one_are_refused_before_any_run(tmp_path):
    from benchmarks import _harness as H

    with pytest.raises(H.BenchmarkError, match="--mem-repeats 0: give 1 or more"):
        run_benchmark("cpu", ["--parts", "memory", "--mem-repeats", "0", "--results-dir", str(tmp_path)])
    assert not (tmp_path / "cpu.json").exists()


def test_a_memory_variant_runs_with_its_own_environment(vgg16_random):
    """A memory variant's "env" is the environment of its run's process (and is recorded); the
    parts that run in the benchmark's own process refuse it."""
    from benchmarks import _harness as H
    from benchmarks.cpu import _children, _spec

    args = __import__("argparse").Namespace(
        content="generated:content", style="generated:style", weights=str(vgg16_random), threads=1
    )
    env = {"NAPARI_NST_BENCH_PROBE": "yes"}
    plain, given = _children([_spec(args, "napari-nst", 32, 2, {}), _spec(args, "napari-nst", 32, 2, {"env": env})])
    assert "env" not in plain and given["env"] == env
    with pytest.raises(H.BenchmarkError, match='"env" runs only in the memory part'):
        run_benchmark(
            "cpu",
            [
                "--dry-run",
                "--weights",
                str(vgg16_random),
                "--parts",
                "per-eval",
                "--variants",
                json.dumps({"allocator": {"env": env}}),
            ],
        )


@pytest.mark.parametrize("env", [{"MALLOC_ARENA_MAX": 2}, ["MALLOC_ARENA_MAX=2"], {"A": None}])
def test_a_memory_variants_environment_must_be_text(env, tmp_path):
    from benchmarks import _harness as H

    variants = json.dumps({"allocator": {"env": env}})
    with pytest.raises(H.BenchmarkError, match='"env" must map names to text'):
        run_benchmark("cpu", ["--parts", "memory", "--mem-variants", variants, "--results-dir", str(tmp_path)])
    assert not (tmp_path / "cpu.json").exists()
