"""Stacks on a dask cluster (iter_stylize_stack(client=...), ``stylize-stack --scheduler``): chunks of
frames on a real two-process LocalCluster, each chunk the stack engine's warm-started frames, the
borders cross-faded, cancelling, a killed worker, the command line.

Tiny frames, few steps, seeded random weights (conftest's ``fast``); throughput is benchmarks/batch.py's.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import napari_nst
from napari_nst.cli import main
from napari_nst.core.distributed.stack import Chunk, blend_weight, plan_chunks

distributed = pytest.importorskip("distributed")  # the testing extra brings it


@pytest.fixture
def moving(content):
    """(9, 40, 56, 3) uint8: the content picture moving right by 2 px a frame."""
    return np.stack([np.roll(content, 2 * t, axis=1) for t in range(9)])


def _opts(fast):
    return {**fast, "frame_steps": 2}


def _by_frame(records):
    out = {}
    for rec in records:
        assert rec.step == rec.total and rec.image is not None  # one record per frame, its last
        assert rec.frame not in out
        out[rec.frame] = rec
    return out


def _network_stats():
    from napari_nst.core.distributed.cluster import stats

    return stats()


def _reset_stats():
    from napari_nst.core.distributed.cluster import reset_stats

    reset_stats()


def test_plan_chunks():
    assert plan_chunks(0, 9, 2) == [Chunk(0, 4, 6), Chunk(4, 9, 9)]
    assert plan_chunks(0, 9, 2, overlap=0) == [Chunk(0, 4, 4), Chunk(4, 9, 9)]
    assert plan_chunks(0, 7, 4) == [Chunk(0, 7, 7)]  # at least 4 frames a chunk: one chunk
    assert plan_chunks(3, 20, 8) == [Chunk(3, 7, 9), Chunk(7, 11, 13), Chunk(11, 15, 17), Chunk(15, 20, 20)]
    assert plan_chunks(0, 5, 2, chunk_frames=2, overlap=5) == [Chunk(0, 2, 4), Chunk(2, 4, 5), Chunk(4, 5, 5)]
    assert [blend_weight(Chunk(0, 4, 6), t) for t in (4, 5)] == [1 / 3, 2 / 3]
    for bad in (dict(chunk_frames=0), dict(overlap=-1)):
        with pytest.raises(ValueError, match="chunk_frames|overlap"):
            plan_chunks(0, 9, 2, **bad)


def test_chunks_are_the_stack_engine_warm_started_within_themselves(client, moving, style, fast):
    """Without overlap each chunk's frames are those of a stack run on its frames alone."""
    client.run(_reset_stats)
    got = _by_frame(napari_nst.iter_stylize_stack(moving, style, client=client, overlap=0, **_opts(fast)))
    assert sorted(got) == list(range(9))
    assert all(r.frames == 9 and r.image.shape == (23, 32, 3) and r.image.dtype == np.float32 for r in got.values())
    assert max(r.stack_step for r in got.values()) == got[0].stack_total == 2 * 4 + 7 * 2  # two chunk heads
    first = napari_nst.stylize_stack(moving[:4], style, **_opts(fast))
    second = napari_nst.stylize_stack(moving[4:], style, **_opts(fast))
    here = np.concatenate([first, second])
    diff = max(float(np.abs(got[t].image - here[t]).max()) for t in range(9))
    assert diff < 0.02, diff  # the same computation (torch's thread counts differ: rounding only)
    assert float(np.abs(got[4].image - here[3]).mean()) > 0  # frame 4 starts a chunk
    # both workers took a chunk; each built its network once and reused it for every later frame it
    # ran (dask may run a frame of one chunk on the other worker: the pastiche travels with it)
    stats = client.run(_network_stats)
    assert all(s["builds"] == 1 for s in stats.values()), stats
    assert sum(s["builds"] + s["hits"] for s in stats.values()) == 9, stats


def test_border_frames_are_cross_faded(client, moving, style, fast):
    plain = _by_frame(napari_nst.iter_stylize_stack(moving, style, client=client, overlap=0, **_opts(fast)))
    faded = _by_frame(napari_nst.iter_stylize_stack(moving, style, client=client, overlap=2, **_opts(fast)))
    assert max(r.stack_step for r in faded.values()) == faded[0].stack_total == 2 * 4 + 7 * 2 + 2 * 2
    earlier = napari_nst.stylize_stack(moving[:6], style, **_opts(fast))  # the first chunk, run 2 frames on
    for t, w in ((4, 1 / 3), (5, 2 / 3)):
        want = (1 - w) * earlier[t] + w * plain[t].image
        assert float(np.abs(faded[t].image - want).max()) < 0.02, t
    for t in (0, 3, 6, 8):
        assert float(np.abs(faded[t].image - plain[t].image).max()) < 0.02, t


def test_in_order_and_bad_arguments_before_any_work(client, moving, style, fast):
    frames = [r.frame for r in napari_nst.iter_stylize_stack(moving, style, client=client, in_order=True, **fast)]
    assert frames == list(range(9))
    with pytest.raises(ValueError, match="chunk_frames"):
        napari_nst.iter_stylize_stack(moving, style, client=client, chunk_frames=0, **fast)
    with pytest.raises(ValueError, match="unknown option"):
        napari_nst.iter_stylize_stack(moving, style, client=client, chunk_size=3, **fast)


def _frame_keys(dask_scheduler):
    return [str(k) for k, ts in dask_scheduler.tasks.items() if "napari-nst-frame" in str(k) and ts.state != "memory"]


def test_closing_cancels_the_frames_not_made(client, moving, style, fast):
    records = napari_nst.iter_stylize_stack(moving, style, client=client, **_opts(fast))
    first = next(records)
    assert first.image is not None
    records.close()
    deadline = time.monotonic() + 60
    while client.run_on_scheduler(_frame_keys) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.run_on_scheduler(_frame_keys) == []  # nothing left to run or running


@pytest.mark.slow
def test_a_killed_worker_costs_a_frame_not_the_stack(client, moving, style, fast):
    pids = client.run(os.getpid)
    records = napari_nst.iter_stylize_stack(moving, style, client=client, **{**_opts(fast), "steps": 12})
    got = {}
    killed = False
    for rec in records:
        got[rec.frame] = rec
        if not killed:
            busy = [addr for addr, keys in client.processing().items() if keys]
            if busy:
                os.kill(pids[busy[0]], signal.SIGKILL)  # dies mid-frame; its nanny starts a new one
                killed = True
    assert killed and sorted(got) == list(range(9))


def test_cli_stylize_stack_on_a_scheduler(client, moving, tmp_path, fast, capsys):
    import tifffile
    from PIL import Image

    tifffile.imwrite(tmp_path / "in.tif", moving)
    Image.fromarray(np.full((48, 48, 3), 90, np.uint8)).save(tmp_path / "style.png")
    flags = ["--size", "32", "--steps", "4", "--frame-steps", "2", "--model", "vgg16", "--weights", fast["weights"]]
    args = ["stylize-stack", str(tmp_path / "in.tif"), str(tmp_path / "style.png"), "-o", str(tmp_path / "out.tif")]
    code = main([*args, "--scheduler", client.scheduler.address, "--device", "cpu", "--quiet", *flags])
    assert code == 0, capsys.readouterr().err
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.shape == (9, 23, 32, 3) and out.dtype == np.uint16
    assert main([*args, "--workers", "0", *flags]) == 1
    assert "--workers must be 1 or more" in capsys.readouterr().err


def test_continue_a_stopped_stack_on_the_cluster(client, moving, style, fast):
    """start/previous: the first chunk starts warm from the given pastiche, as on one machine."""
    here = napari_nst.stylize_stack(moving, style, **_opts(fast))
    got = _by_frame(
        napari_nst.iter_stylize_stack(moving, style, client=client, start=4, previous=here[3], **_opts(fast))
    )
    assert sorted(got) == [4, 5, 6, 7, 8]  # one chunk (5 frames), every frame warm-started
    assert got[4].stack_total == 5 * 2
    assert max(float(np.abs(got[t].image - here[t]).max()) for t in got) < 0.02


def test_per_frame_regions_and_two_styles_on_the_cluster(client, moving, style, fast):
    """A Labels stack (one label image per frame) and two styles: each worker's task gets its own
    frames' labels, so the cluster's frames are those of stack runs on the same frames here."""
    regions = np.zeros(moving.shape[:3], np.int32)
    for t in range(len(moving)):
        regions[t, :, : 8 + 4 * t] = 1  # a region that grows frame by frame
    styles = [style, style[::-1]]
    kw = {**_opts(fast), "region_styles": {1: 1, 0: 0}}
    got = _by_frame(napari_nst.iter_stylize_stack(moving, styles, client=client, overlap=0, regions=regions, **kw))
    first = napari_nst.stylize_stack(moving[:4], styles, regions=regions[:4], **kw)
    second = napari_nst.stylize_stack(moving[4:], styles, regions=regions[4:], **kw)
    here = np.concatenate([first, second])
    diff = max(float(np.abs(got[t].image - here[t]).max()) for t in range(9))
    assert diff < 0.02, diff
