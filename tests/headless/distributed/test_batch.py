"""Batches (napari_nst.batch, ``napari-nst batch``): a real two-process LocalCluster, faults, resume.

Tiny images and seeded random weights (conftest's ``fast``); throughput is benchmarks/batch.py's.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from PIL import Image

import napari_nst
from napari_nst.cli import main
from napari_nst.core.distributed import cluster
from napari_nst.core.distributed.manifest import file_digest
from napari_nst.core.errors import OptionError


@pytest.fixture
def folder(tmp_path, content, style):
    """tmp/in: three small content images; tmp/style.png."""
    src = tmp_path / "in"
    src.mkdir()
    for k in range(3):
        Image.fromarray(np.roll(content, 7 * k, axis=1)).save(src / f"c{k}.png")
    Image.fromarray(style).save(tmp_path / "style.png")
    return src


def _stats():
    from napari_nst.core.distributed.cluster import stats

    return stats()


def _reset_stats():
    from napari_nst.core.distributed.cluster import reset_stats

    reset_stats()


def _manifest(out):
    return json.loads((out / "batch.json").read_text())


def _flags(fast, steps=None):
    return [
        "--size",
        str(fast["size"]),
        "--steps",
        str(steps or fast["steps"]),
        "--model",
        "vgg16",
        "--weights",
        fast["weights"],
        "--device",
        "cpu",
    ]


def test_cluster_batch_with_a_bad_file_among_good_ones(client, folder, tmp_path, fast, capsys):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # a bad input among good ones
    out = tmp_path / "out"
    client.run(_reset_stats)
    code = main(
        [
            "batch",
            str(folder),
            "--style",
            str(tmp_path / "style.png"),
            "-o",
            str(out),
            "--scheduler",
            client.scheduler.address,
            *_flags(fast),
        ]
    )
    assert code == 1  # one failed
    err = capsys.readouterr().err
    assert "1 failed" in err and "broken.png" in err and "cannot read" in err
    items = {os.path.basename(e["content"]): e for e in _manifest(out)["items"]}
    assert sorted(items) == ["broken.png", "c0.png", "c1.png", "c2.png"]
    assert items["broken.png"]["status"] == "failed" and "ImageError" in items["broken.png"]["error"]
    workers = set(client.scheduler_info()["workers"])
    for name in ("c0.png", "c1.png", "c2.png"):
        e = items[name]
        assert e["status"] == "done" and e["error"] == "" and e["worker"] in workers
        assert e["seconds"] > 0 and e["weights"]["content"] > 0 and e["weights"]["style"] > 0
        assert e["weights_file"] == os.path.realpath(fast["weights"]) and e["model"] == "vgg16"
        img = np.asarray(Image.open(e["output"]))
        assert img.shape == (23, 32, 3) and os.path.getsize(e["output"]) == e["bytes"]
    # one network per worker: built at most once in each worker process, reused by its later tasks
    stats = client.run(_stats)
    assert all(s["builds"] <= 1 for s in stats.values()), stats
    assert sum(s["builds"] + s["hits"] for s in stats.values()) == 3
    assert sum(s["hits"] for s in stats.values()) >= 1


def test_arrays_on_the_cluster_come_back_as_images(client, content, style, fast):
    results = napari_nst.batch([content, content[::-1].copy()], style, client=client, **fast)
    assert [r.status for r in results] == ["done", "done"]
    assert all(r.image.shape == (23, 32, 3) and r.image.dtype == np.float32 for r in results)
    assert results[0].content.startswith("array #0") and results[0].output is None
    assert not np.array_equal(results[0].image, results[1].image)


def test_a_killed_worker_has_its_item_rerun_elsewhere(client, folder, tmp_path, fast):
    out = tmp_path / "out"
    pids = client.run(os.getpid)
    box: dict = {}
    runner = threading.Thread(
        target=lambda: box.update(
            r=napari_nst.batch(folder, tmp_path / "style.png", out, client=client, **{**fast, "steps": 12})
        )
    )
    runner.start()
    victim = name = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline and runner.is_alive():
        for addr, keys in client.processing().items():
            if keys:
                victim, name = addr, str(keys[0]).split("-")[2]
                break
        time.sleep(0.01)
    assert victim is not None, "no task was seen running"
    os.kill(pids[victim], signal.SIGKILL)  # the worker dies mid-task; its nanny starts a new one
    runner.join(timeout=300)
    assert not runner.is_alive()
    items = {os.path.basename(e["content"]): e for e in _manifest(out)["items"]}
    assert [e["status"] for e in items.values()] == ["done"] * 3  # every item ends in batch.json, done
    assert items[f"{name}.png"]["worker"] != victim  # made again, by another worker
    assert [r.status for r in box["r"]] == ["done"] * 3


def test_ctrl_c_keeps_finished_outputs_and_resume_continues(client, folder, tmp_path, fast):
    out = tmp_path / "out"
    seen = []

    def interrupt_after_first(line):
        seen.append(line)
        raise KeyboardInterrupt  # as Ctrl-C would, while the batch waits for its tasks

    with pytest.raises(KeyboardInterrupt):
        napari_nst.batch(folder, tmp_path / "style.png", out, client=client, log=interrupt_after_first, **fast)
    statuses = [e["status"] for e in _manifest(out)["items"]]
    assert statuses.count("done") == 1 and statuses.count("pending") == 2
    done = next(e for e in _manifest(out)["items"] if e["status"] == "done")
    before = os.stat(done["output"]).st_mtime_ns
    results = napari_nst.batch(folder, tmp_path / "style.png", out, client=client, resume=True, **fast)
    assert [r.status for r in results] == ["done"] * 3
    assert [r.skipped for r in results].count(True) == 1
    assert os.stat(done["output"]).st_mtime_ns == before  # kept, not made again


def test_resume_skips_complete_outputs_only(folder, tmp_path, fast):
    out = tmp_path / "out"
    style = tmp_path / "style.png"
    first = napari_nst.batch(folder, style, out, workers=0, **fast)
    assert [r.status for r in first] == ["done"] * 3
    with open(out / "c1.png", "ab") as fh:  # c1's file no longer matches its recorded hash
        fh.write(b"x")
    (out / "c2.png").unlink()
    again = napari_nst.batch(folder, style, out, workers=0, resume=True, **fast)
    assert [r.skipped for r in again] == [True, False, False]
    assert [r.status for r in again] == ["done"] * 3
    entry = _manifest(out)["items"][1]
    assert file_digest(out / "c1.png") == (entry["bytes"], entry["sha256"])  # made again, and recorded
    with pytest.raises(ValueError, match="other settings .*steps"):
        napari_nst.batch(folder, style, out, workers=0, resume=True, **{**fast, "steps": fast["steps"] + 1})


def test_without_distributed_the_batch_runs_here_and_says_how_to_install(monkeypatch, content, style, fast):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` raises ImportError
    lines = []
    with warnings.catch_warnings(record=True) as caught:  # with a log the note is said there, once
        warnings.simplefilter("always")
        results = napari_nst.batch([content], style, log=lines.append, **fast)
    assert not [w for w in caught if "distributed" in str(w.message)]
    assert results[0].status == "done" and results[0].worker == "local" and results[0].image.shape == (23, 32, 3)
    assert sum("sequentially" in line and "napari-nst[distributed]" in line for line in lines) == 1
    with pytest.warns(UserWarning, match=r"napari-nst\[distributed\]"):  # without a log: a warning
        napari_nst.batch([content], style, **fast)
    with pytest.raises(ValueError, match=r"napari-nst\[distributed\]"):
        napari_nst.batch([content], style, scheduler="tcp://127.0.0.1:1", **fast)


def test_cli_sequential_exit_zero_and_tif(folder, tmp_path, fast, capsys):
    import tifffile

    out = tmp_path / "out"
    code = main(
        [
            "batch",
            str(folder / "c0.png"),
            str(folder / "c1.*"),
            "--style",
            str(tmp_path / "style.png"),
            "-o",
            str(out),
            "--format",
            "tif",
            "--workers",
            "0",
            *_flags(fast),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["batch.json", "c0.tif", "c1.tif"]
    assert tifffile.imread(out / "c0.tif").dtype == np.uint16
    err = capsys.readouterr().err
    assert "2 of 2 done" in err and err.count("done   ") == 2
    assert "2/2 [" in err and " s/image]" in err  # the bar of stylize, counting images


@pytest.mark.parametrize(
    "case, match",
    [
        ("empty", "no content images"),
        ("missing folder", "no content image or folder"),
        ("not an image", "is not an image file"),
        ("empty glob", "matches no image file"),
        ("out is a file", "is a file"),
        ("same stem", "would both be written"),
        ("two styles", "exactly one style"),
        ("bad option", "unknown option 'stpes'"),
        ("bad format", "format must be one of"),
        ("overwrites input", "would overwrite the content image"),
    ],
)
def test_bad_input_fails_before_any_work(case, match, folder, tmp_path, fast):
    style, out = tmp_path / "style.png", tmp_path / "out"
    contents, kwargs = [folder], dict(fast)
    if case == "empty":
        contents = []
    elif case == "missing folder":
        contents = [tmp_path / "no-such-folder"]
    elif case == "not an image":
        (tmp_path / "notes.txt").write_text("hello")
        contents = [folder / "c0.png", tmp_path / "notes.txt"]
    elif case == "empty glob":
        contents = [str(folder / "*.jpg")]
    elif case == "out is a file":
        out = tmp_path / "file"
        out.write_text("")
    elif case == "same stem":
        (tmp_path / "other").mkdir()
        Image.open(folder / "c0.png").save(tmp_path / "other" / "c0.png")
        contents = [folder, tmp_path / "other"]
    elif case == "two styles":
        style = [style, style]
    elif case == "bad option":
        kwargs["stpes"] = 3
    elif case == "bad format":
        kwargs["format"] = "gif"
    elif case == "overwrites input":
        out = folder
    with pytest.raises(ValueError, match=match) as info:
        napari_nst.batch(contents, style, out, workers=0, **kwargs)
    assert case != "bad option" or isinstance(info.value, OptionError)
    assert not (tmp_path / "out").exists() and not (folder / "batch.json").exists()  # nothing was made


def test_no_worker_declares_a_gpu(client, content, style, fast):
    with pytest.raises(ValueError, match="--resources GPU=1"):
        napari_nst.batch([content], style, client=client, **{**fast, "device": "cuda"})


def test_local_cluster_shape():
    assert cluster.local_cluster_shape(cores=2, gpus=0)[2] == {}
    assert cluster.local_cluster_shape(cores=8, gpus=2) == (1, 1, {"GPU": 1})


def test_batch_subcommand_has_every_generated_option_flag():
    from napari_nst.cli import build_parser
    from napari_nst.core.options import STACK_OPTIONS, Options, specs

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    parser = sub.choices["batch"]
    flags = {a.dest: a.option_strings for a in parser._actions if a.dest in Options.names()}
    assert flags == {sp.name: [sp.flag] for sp in specs() if sp.cli and sp.name not in STACK_OPTIONS}
