"""``python -m benchmarks gpu --dry-run``: the benchmark a GPU machine runs once works end to end (CPU, toy size)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from benchmarks.__main__ import parse, run_benchmark


def test_dry_run_writes_results_from_paths_given_as_arguments(
    tmp_path, content, style, vgg16_random, kernel_free_estimates, monkeypatch
):
    import torch

    cp, sp = tmp_path / "c.png", tmp_path / "s.png"
    Image.fromarray(content).resize((96, 72)).save(cp)
    Image.fromarray(style).resize((80, 80)).save(sp)
    before = torch.backends.cudnn.benchmark
    argv = ["--dry-run", "--weights", str(vgg16_random), "--content", str(cp), "--style", str(sp)]
    monkeypatch.setenv("NAPARI_NST_CONFIG_DIR", str(tmp_path / "config"))
    try:
        run_benchmark("gpu", [*argv, "--results-dir", str(tmp_path / "out")])
    finally:
        torch.backends.cudnn.benchmark = before
    (run,) = json.loads((tmp_path / "out" / "gpu.json").read_text())["runs"]
    res = run["results"]
    (row,) = res["rows"]
    assert row["size"] == 64 and row["steps"] == 4 and row["shape"] == [48, 64]
    for side in ("baseline", "napari-nst"):
        assert len(row[side]["all_s"]) == 2 and row[side]["min_s"] <= row[side]["median_s"]
        assert row[side]["objective"] > 0
    assert row["napari-nst"]["precision"] in ("float32", "bfloat16")
    assert {"tf32_matmul", "tf32_cudnn", "cudnn.benchmark"} <= set(res["settings"])
    assert run["machine"]["device"] == "cpu" and run["machine"]["class"].startswith("CPU")
    # the tiles section: the whole image, tiles of --tile px, and the engine's own choice under --tile-max-memory
    whole, tiled, auto = res["tiles"]
    assert all("tile_size" in r for r in res["tiles"]), res["tiles"]  # not skipped, no error
    assert (whole["tile_size"], tiled["tile_size"], auto["tile_size"]) == (0, 96, 96)
    from benchmarks import gpu

    # the cap between the model's 96 px and 128 px tiles, in the precision auto runs here
    assert auto["max_memory"] == str(gpu._cap_for_tiles_of_96("cpu")) and "tiles of 96 px" in auto["note"]
    assert all(r["shape"] == [96, 128] and r["steps"] == 2 and r["s_per_eval"] > 0 for r in res["tiles"])
    names = [f["name"] for f in run["figures"]]
    assert "64x48 px, 4 evaluations: time" in names
    assert "128x96 px, tiles of 96 px: time per evaluation" in names
    time_row = run["figures"][names.index("64x48 px, 4 evaluations: time")]
    assert time_row["ratio"] == row["time_ratio"] and time_row["against"] == "textbook"
    # the tuner: the table a first run measures, nothing kept in the cache
    (tuned,) = res["tuner"]
    assert tuned["size"] == 64 and tuned["chosen"]["auto"] and tuned["table"]["rows"]
    assert not (tmp_path / "config" / "plans.json").exists()
    # the CUDA graph per path: each run with and without it; on a CPU no graph is captured, and
    # the figure says so
    assert [r["path"] for r in res["graph"]] == [
        "plain",
        "two styles on two regions, luminance",
        "stack of 3 frames",
        "tiles of 96 px",
    ]
    for r in res["graph"]:
        assert len(r["eager"]) == len(r["graph"]) == 1, r
        runs = r["eager"] + r["graph"]
        assert all(x["evaluations"] >= 2 and x["captures"] == 0 and not x["failures"] for x in runs), r
        assert r["eager"][0]["total"] == pytest.approx(r["graph"][0]["total"], rel=1e-4)
    graph_names = [f["name"] for f in run["figures"] if f["part"] == "graph"]
    assert len(graph_names) == 4 and all("(none captured)" in n for n in graph_names)
    assert {f["part"] for f in run["figures"]} == {"sizes", "tiles", "tuner", "graph"}


def test_graph_spy_counts_captures_and_keeps_the_fallback_warning(monkeypatch):
    import torch

    from benchmarks.gpu import GraphSpy
    from napari_nst.core.objective import graphed

    def refuse(obj, image):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphed.Objective, "_capture", refuse)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)  # the fallback's, on a CPU

    def fn(g):
        t = (g**2).sum()
        return t, {"total": t}

    with GraphSpy() as spy:
        total, _, grad = graphed.Objective(fn, graph=True)(torch.ones(1, 3, 4, 4))
    assert spy.captures == 1 and len(spy.failures) == 1 and "not permitted" in spy.failures[0]
    assert float(total) == 48.0 and torch.equal(grad, torch.full((1, 3, 4, 4), 2.0))  # evaluated eagerly
    assert graphed.Objective._capture is refuse  # put back


def test_weights_and_pictures_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("NAPARI_NST_WEIGHTS", "/w.pth")
    monkeypatch.setenv("NST_CONTENT", "/c.jpg")
    monkeypatch.setenv("NST_STYLE", "/s.jpg")
    args = parse("gpu", [])
    assert (args.weights, args.content, args.style) == ("/w.pth", "/c.jpg", "/s.jpg")
    assert args.sizes == "512,1024,2048" and args.steps == 500
    assert args.tile_sizes == "2048,4096" and args.tile == 1024


def test_gpu_pack_keeps_the_layers_the_benchmark_uses_and_the_pictures(tmp_path, vgg16_random, monkeypatch):
    """The GPU machine gets only the repository and what is carried (64 MiB in all): the weights
    travel without the layers past relu5_1, the same tensors for those the runs use."""
    import torch

    from benchmarks import _harness as H
    from benchmarks import gpu
    from napari_nst.core.encoder.vgg import build_vgg
    from napari_nst.core.options import CONTENT_LAYERS, STYLE_LAYERS

    files = gpu.pack(tmp_path / "pack", str(vgg16_random))
    assert files["weights"].name == "vgg16-to-relu5_1.pth"
    full = torch.load(vgg16_random, weights_only=True)
    kept = torch.load(files["weights"], weights_only=True)
    assert set(kept) == {k for k in full if int(k.split(".")[1]) <= 24}  # conv5_1 is features.24
    assert "features.26.weight" in full and all(torch.equal(kept[k], full[k]) for k in kept)
    net = build_vgg("vgg16", [*CONTENT_LAYERS, *STYLE_LAYERS], weights=str(files["weights"]), pooling="max")
    assert net(torch.rand(1, 3, 32, 32))["relu5_1"].shape[1] == 512
    assert files["content"].name == "tubingen.jpg" and files["style"].name == "starry_night.jpg"
    assert files["content"].read_bytes() == (H.SHARED / "images" / "tubingen.jpg").read_bytes()
    # the folder is ignored by git (it travels only as carried), once
    monkeypatch.setattr(H, "ROOT", tmp_path)
    (tmp_path / ".git" / "info").mkdir(parents=True)
    (tmp_path / ".git" / "info" / "exclude").write_text("# git's own\n")
    gpu._ignore(tmp_path / "pack")
    gpu._ignore(tmp_path / "pack")
    assert (tmp_path / ".git" / "info" / "exclude").read_text() == "# git's own\n/pack/\n"


def test_bad_sizes_and_a_pack_folder_outside_the_repository_fail_with_the_flag_named(tmp_path):
    from benchmarks import _harness as H
    from benchmarks import gpu

    assert gpu.sizes_of("512,2048", "--tune-sizes") == [512, 2048] and gpu.sizes_of("", "--tile-sizes") == []
    with pytest.raises(H.BenchmarkError, match="--tune-sizes 'abc': give whole numbers"):
        gpu.sizes_of("abc", "--tune-sizes")
    with pytest.raises(H.BenchmarkError, match="--sizes '0': every number must be 1 or more"):
        gpu.sizes_of("0", "--sizes")
    with pytest.raises(H.BenchmarkError, match="give a folder inside the repository"):
        gpu.pack_main(["--dest", str(tmp_path / "elsewhere")])
    assert not (tmp_path / "elsewhere").exists()  # nothing written
