"""The compute plan measured on this machine (core/compute/tune.py), with a faked clock and faked capabilities:
which plan the tuner picks for given timings, its margin against noise, the cache and what
invalidates it, the static rules as the fallback, and the engine and command line using it.
No assertion here depends on how fast this machine is."""

from __future__ import annotations

import json
import logging
import os
import random

import numpy as np
import pytest
import torch

from napari_nst.core.compute import device as D
from napari_nst.core.compute import tune
from napari_nst.core.compute.device import NetworkPlan
from napari_nst.core.compute.tune import Candidate
from napari_nst.core.optim import engine
from napari_nst.core.optim.levers import Levers, use_levers
from napari_nst.core.options import Options

CPU = torch.device("cpu")
BF16_CL_LEAN = Candidate("bfloat16", NetworkPlan(channels_last=True, lean_pool=True))
BF16_CL = Candidate("bfloat16", NetworkPlan(channels_last=True, lean_pool=False))
F32_WINO = Candidate("float32", NetworkPlan(channels_last=False, lean_pool=False, winograd=True))
F32_DIRECT = Candidate("float32", NetworkPlan(channels_last=False, lean_pool=False))
F32_CL = Candidate("float32", NetworkPlan(channels_last=True, lean_pool=False))
F32_CL_WIDE = Candidate("float32", NetworkPlan(channels_last=True, lean_pool=False, winograd_wide=True))
F32_CL_128 = Candidate(
    "float32", NetworkPlan(channels_last=True, lean_pool=False, winograd_wide=True, winograd_min=128)
)


@pytest.fixture
def config(tmp_path, monkeypatch):
    """Measuring on (conftest switches it off), the cache in a temporary folder."""
    monkeypatch.setenv("NAPARI_NST_TUNE", "1")
    monkeypatch.setenv("NAPARI_NST_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config"


@pytest.fixture
def caps(monkeypatch):
    """``caps(bf16=bool, nnpack=bool)``: this CPU's capabilities as the tuner sees them."""

    def set_up(bf16=True, nnpack=True):
        monkeypatch.setattr(D, "cpu_has_fast_bf16", lambda: bf16)
        monkeypatch.setattr(tune, "nnpack_available", lambda: nnpack)

    return set_up


class Clock:
    """A fake clock that moves only when a faked pass runs."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_passes(clock: Clock, seconds, drift: float = 0.0, jitter: float = 0.0, seed: int = 0):
    """``run_one`` for :func:`tune.race`: each pass of candidate ``c`` moves the clock by
    ``seconds[c]``, times a load factor that grows by ``drift`` per pass, times a random +-``jitter``."""
    rng = random.Random(seed)
    calls = {"n": 0}

    def run_one(c: Candidate) -> None:
        calls["n"] += 1
        load = 1.0 + drift * calls["n"]
        clock.now += seconds[c] * load * (1.0 + rng.uniform(-jitter, jitter))

    run_one.calls = calls  # type: ignore[attr-defined]
    return run_one


def choose(cands, seconds, precision="auto", **kw):
    clock = Clock()
    rows, rounds, spent = tune.race(cands, fake_passes(clock, seconds, **kw.pop("noise", {})), timer=clock, **kw)
    key = tune.MachineKey("cpu", "test CPU", "isa", "t", 2, 256)
    return tune.Table(key, (192, 256), rows, spent, rounds).choose(precision)


# --------------------------------------------------------------------------- the choice


CANDS = [BF16_CL_LEAN, BF16_CL, F32_DIRECT, F32_WINO, F32_CL, F32_CL_128, F32_CL_WIDE]


def test_the_fastest_plan_is_chosen_when_it_beats_the_static_one_by_more_than_the_margin():
    seconds = {BF16_CL_LEAN: 0.20, BF16_CL: 0.15, F32_WINO: 0.40, F32_DIRECT: 0.17, F32_CL: 0.18}
    assert choose(CANDS, seconds) == BF16_CL
    # explicit precisions: the fastest of that precision (oneDNN's direct convolutions over Winograd)
    assert choose(CANDS, seconds, "float32") == F32_DIRECT
    assert choose(CANDS, seconds, "bfloat16") == BF16_CL


def test_the_static_plan_is_kept_unless_another_is_faster_by_more_than_the_margin():
    within = 1.0 - 0.5 * tune.MARGIN  # faster, but by less than the margin
    seconds = {BF16_CL_LEAN: 0.20, BF16_CL: 0.20 * within, F32_WINO: 0.4, F32_DIRECT: 0.3, F32_CL: 0.3}
    assert choose(CANDS, seconds) == BF16_CL_LEAN
    beyond = 1.0 / (1.0 + 2 * tune.MARGIN)
    seconds[BF16_CL] = 0.20 * beyond
    assert choose(CANDS, seconds) == BF16_CL


def test_among_near_ties_the_first_in_order_of_preference_is_chosen():
    # two plans within the margin of each other, both clearly faster than the static one: the
    # earlier in candidates' order, not the one the noise happened to favour
    seconds = {BF16_CL_LEAN: 0.30, BF16_CL: 0.201, F32_WINO: 0.4, F32_DIRECT: 0.200, F32_CL: 0.4}
    assert choose(CANDS, seconds) == BF16_CL
    seconds[F32_DIRECT] = 0.15  # now faster by more than the margin
    assert choose(CANDS, seconds) == F32_DIRECT


def test_the_wide_winograd_plan_replaces_the_one_from_128_channels_only_beyond_the_margin():
    """The two Winograd plans differ by two layers' worth of time: the one from 128 channels is
    kept in a near tie; a plan that keeps no kernels excludes both."""
    within, beyond = 1.0 - 0.5 * tune.MARGIN, 1.0 / (1.0 + 2 * tune.MARGIN)
    seconds = {c: 0.4 for c in CANDS} | {F32_CL_128: 0.20, F32_CL_WIDE: 0.20 * within}
    assert choose(CANDS, seconds, "float32") == F32_CL_128
    seconds[F32_CL_WIDE] = 0.20 * beyond
    assert choose(CANDS, seconds, "float32") == F32_CL_WIDE
    clock = Clock()
    rows, rounds, spent = tune.race(CANDS, fake_passes(clock, seconds), timer=clock)
    table = tune.Table(tune.MachineKey("cpu", "m", "i", "t", 1, 256), (1, 1), rows, spent, rounds)
    assert table.choose("float32", kernels=False) == F32_DIRECT
    assert F32_CL_128.label != F32_CL_WIDE.label and "128" in F32_CL_128.label
    assert Candidate.from_dict(F32_CL_128.as_dict()) == F32_CL_128
    old = {k: v for k, v in F32_CL_WIDE.as_dict().items() if k != "winograd_min"}  # a version-2 row
    assert Candidate.from_dict(old) == F32_CL_WIDE


@pytest.mark.parametrize("seed", range(20))
def test_noise_and_drifting_load_do_not_flip_the_choice(seed):
    # the machine gets slower pass after pass (another job starting) and every pass is +-3 % off:
    # ratios to the static plan timed in the same round cancel the drift, the margin the jitter
    equal = {c: 0.2 for c in CANDS}
    noise = {"drift": 0.01, "jitter": 0.03, "seed": seed}
    assert choose(CANDS, equal, noise=noise) == BF16_CL_LEAN
    faster = {**equal, F32_DIRECT: 0.15}
    assert choose(CANDS, faster, noise=noise) == F32_DIRECT


def test_clearly_slower_plans_are_timed_no_more_and_the_budget_ends_the_rounds():
    clock = Clock()
    seconds = {BF16_CL_LEAN: 0.2, BF16_CL: 0.2, F32_DIRECT: 0.5, F32_WINO: 0.7, F32_CL: 0.8}
    rows, rounds, spent = tune.race(CANDS, fake_passes(clock, seconds), timer=clock, budget=8.0)
    by = {r.candidate: r for r in rows}
    assert by[F32_WINO].dropped and len(by[F32_WINO].seconds) == tune.MIN_ROUNDS
    assert by[F32_CL].dropped and len(by[F32_CL].seconds) == tune.MIN_ROUNDS
    # each precision's first plan stays in: an explicit precision can still be chosen from it
    assert not by[F32_DIRECT].dropped and len(by[F32_DIRECT].seconds) == rounds
    assert tune.MIN_ROUNDS < rounds < tune.MAX_ROUNDS  # the budget ended it, not the round limit
    warm_up = sum(seconds.values())
    assert spent - warm_up == pytest.approx(sum(sum(r.seconds) for r in rows))
    assert spent - 8.0 < 0.2 + 0.2 + 0.5  # at most one round over the budget (warm-up included)


def test_a_slow_machine_times_one_round_only():
    clock = Clock()
    seconds = {c: 2.0 for c in CANDS}  # the warm-up alone is 10 s, far over OVERRUN budgets
    rows, rounds, _ = tune.race(CANDS, fake_passes(clock, seconds), timer=clock, budget=1.0)
    assert rounds == 1 and all(len(r.seconds) == 1 for r in rows)


def test_a_plan_that_fails_is_dropped_and_never_chosen():
    clock = Clock()
    seconds = {c: 0.2 for c in CANDS}
    seconds[F32_DIRECT] = 0.01
    passes = fake_passes(clock, seconds)

    def run_one(c):
        if c == F32_DIRECT:
            raise RuntimeError("no such kernel\nmore")
        passes(c)

    rows, rounds, spent = tune.race(CANDS, run_one, timer=clock)
    table = tune.Table(tune.MachineKey("cpu", "m", "i", "t", 1, 256), (1, 1), rows, spent, rounds)
    failed = next(r for r in rows if r.candidate == F32_DIRECT)
    assert failed.dropped and failed.error == "RuntimeError: no such kernel" and not failed.seconds
    assert table.choose() == BF16_CL_LEAN and table.choose("float32") == F32_WINO
    assert "dropped: RuntimeError" in table.text()


# --------------------------------------------------------------------------- candidates


def test_candidates_follow_the_capabilities(caps):
    caps(bf16=True, nnpack=True)
    assert tune.candidates(CPU) == CANDS  # the static plan (bf16) first, its precision next
    caps(bf16=False, nnpack=True)
    assert tune.candidates(CPU) == [F32_DIRECT, F32_WINO, F32_CL, F32_CL_128, F32_CL_WIDE]  # no emulated bfloat16
    caps(bf16=False, nnpack=False)
    assert tune.candidates(CPU) == [F32_DIRECT, F32_CL, F32_CL_128, F32_CL_WIDE]  # ours needs no NNPACK
    assert tune.candidates(torch.device("mps")) == []


@pytest.mark.parametrize("cap, precisions", [((8, 0), ["bfloat16", "float32"]), ((7, 0), ["float32"])])
def test_cuda_candidates_are_precision_and_layout(monkeypatch, cap, precisions):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: cap)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    cands = tune.candidates(torch.device("cuda"))
    assert [c.precision for c in cands[::2]] == precisions
    assert all(not c.plan.winograd and not c.plan.lean_pool for c in cands)
    assert {c.plan.channels_last for c in cands} == {False, True}
    assert cands[0] == Candidate(precisions[0], D.network_plan(torch.device("cuda"), cands[0].dtype))


# --------------------------------------------------------------------------- the cache


def _table(key: tune.MachineKey, seconds) -> tune.Table:
    clock = Clock()
    cands = list(seconds)
    rows, rounds, spent = tune.race(cands, fake_passes(clock, seconds), timer=clock)
    return tune.Table(key, (key.size * 3 // 4, key.size), rows, spent, rounds, "now")


def test_the_table_is_kept_and_read_back(config):
    key = tune.MachineKey("cpu", "test CPU", "isa", "2.14", 2, 256)
    table = _table(key, {F32_WINO: 0.3, F32_DIRECT: 0.2, F32_CL: 0.25})
    assert tune.store(table) is None
    back = tune.load(key)
    assert back is not None and back.as_dict() == table.as_dict() and back.choose() == F32_DIRECT
    assert json.loads((config / tune.CACHE_FILE).read_text())["version"] == tune.CACHE_VERSION
    other = tune.MachineKey("cpu", "test CPU", "isa", "2.14", 2, 512)
    tune.store(_table(other, {F32_WINO: 0.1, F32_DIRECT: 0.2}))
    assert tune.load(key).choose() == F32_DIRECT and tune.load(other).choose() == F32_WINO
    assert len(tune.tables()) == 2
    (config / tune.CACHE_FILE).write_text("{not json")
    assert tune.load(key) is None and tune.tables() == []


@pytest.fixture
def counted(monkeypatch, caps):
    """The engine-side measurement faked: Winograd slow, oneDNN fast; counts the measurements."""
    caps(bf16=False, nnpack=True)
    seconds = {F32_WINO: 0.40, F32_DIRECT: 0.15, F32_CL: 0.17}
    clock, count = Clock(), {"n": 0}
    passes = fake_passes(clock, seconds)

    def fake_pass(net, x, c, content, style, targets):
        passes(c)

    def fake_measure(*args, **kwargs):
        count["n"] += 1
        return real_measure(*args, **kwargs)

    real_measure = tune.measure
    monkeypatch.setattr(tune, "_objective_pass", fake_pass)
    monkeypatch.setattr(tune, "_TIMER", clock)
    monkeypatch.setattr(tune, "measure", fake_measure)
    return count


def _decide(shape=(48, 64), precision="auto"):
    from napari_nst.core.encoder.vgg import VGGFeatures

    net = VGGFeatures("vgg16", ["relu1_1", "relu2_1"])
    dtype = D.autocast_dtype(precision, CPU)
    return tune.plan_for_run(
        net, CPU, precision, dtype, lambda: torch.rand(1, 3, *shape), shape, ["relu2_1"], ["relu1_1", "relu2_1"]
    )


def test_a_machine_measures_once_per_key_and_a_new_key_measures_again(config, counted, monkeypatch):
    first = _decide()
    assert counted["n"] == 1 and first.plan == F32_DIRECT.plan and first.dtype is None
    assert "measured the fastest compute plan" in first.note and str(config) in first.note
    again = _decide((40, 60))  # same size class (64 px): read back, not measured
    assert counted["n"] == 1 and again.plan == F32_DIRECT.plan and again.note == ""
    _decide((96, 128))  # another size class
    assert counted["n"] == 2
    monkeypatch.setattr(torch, "get_num_threads", lambda: 7)  # another thread count
    _decide()
    assert counted["n"] == 3
    monkeypatch.setattr(torch, "__version__", "9.9.9")  # a new torch
    _decide()
    assert counted["n"] == 4
    other = "SSE41" if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2" else "AVX2"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", other)  # another instruction set (also where tests run under AVX2)
    _decide()
    assert counted["n"] == 5
    _decide()
    assert counted["n"] == 5


def test_a_run_that_measures_says_so_first_and_the_command_line_prints_it(config, counted, caplog, capsys):
    from napari_nst.cli import _announce_measuring

    with caplog.at_level(logging.INFO, logger="napari_nst.tune"):
        _decide()
        _decide()  # read back: nothing to say
    said = [r.getMessage() for r in caplog.records if r.name == "napari_nst.tune"]
    assert len(said) == 1 and "measuring the fastest compute plan" in said[0]
    assert f"of {len(tune.candidates(CPU))} plans at 64x48 px" in said[0]
    for show in (True, False):
        with _announce_measuring(show):
            tune.announce.info("measuring %s", "now")
        err = capsys.readouterr().err
        assert err == ("napari-nst: measuring now\n" if show else "")
    assert not tune.announce.handlers  # the command line's handler is gone after the command


def test_runs_timed_on_the_same_crop_share_one_table(config, counted):
    """A run larger than MAX_PIXELS is timed on a crop of that many pixels: every such run of one
    aspect (and the runs whose own shape is about that size) reads the table the first measured."""
    assert tune.timed_shape((384, 512)) == tune.timed_shape((768, 1024)) == (221, 295)
    assert tune.timed_shape((192, 256)) == (192, 256)
    keys = {tune.machine_key(CPU, s) for s in [(192, 256), (384, 512), (768, 1024), (1536, 2048)]}
    assert len(keys) == 1 and next(iter(keys)).size == 256
    assert tune.machine_key(CPU, (96, 128)).size == 128  # a smaller run is timed at its own size
    assert tune.machine_key(CPU, (512, 2048)).size == 512  # a panorama's crop is another shape
    _decide((384, 512))
    _decide((768, 1024))
    assert counted["n"] == 1


def test_other_devices_have_other_keys(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: f"GPU {i}")
    cpu = tune.machine_key(CPU, (192, 256))
    gpu0 = tune.machine_key(torch.device("cuda"), (192, 256))
    gpu1 = tune.machine_key(torch.device("cuda:1"), (192, 256))
    assert len({cpu, gpu0, gpu1}) == 3 and gpu0.device == "cuda:0" and gpu0.isa == "sm_80"
    assert tune.size_class((192, 256)) == 256 and tune.size_class((300, 362)) == 256
    assert tune.size_class((300, 363)) == 512


def test_static_rules_when_measuring_is_off_or_impossible(config, counted, monkeypatch):
    monkeypatch.setenv("NAPARI_NST_TUNE", "0")
    off = _decide()
    assert counted["n"] == 0 and off.plan == F32_DIRECT.plan and off.note == ""  # the textbook's network
    monkeypatch.setenv("NAPARI_NST_TUNE", "1")

    def broken(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(tune, "measure", broken)
    failed = _decide()
    assert failed.plan == F32_DIRECT.plan and "built-in rules" in failed.note
    assert not (config / tune.CACHE_FILE).exists()  # nothing kept: the next run tries again


def test_an_explicit_precision_uses_the_fastest_plan_of_that_precision(config, counted, caps):
    caps(bf16=True, nnpack=True)
    key = tune.machine_key(CPU, (48, 64))
    seconds = {BF16_CL_LEAN: 0.2, BF16_CL: 0.1, F32_WINO: 0.5, F32_DIRECT: 0.15, F32_CL: 0.4}
    tune.store(_table(key, seconds))
    assert _decide(precision="auto").plan == BF16_CL.plan
    f32 = _decide(precision="float32")
    assert f32.dtype is None and f32.plan == F32_DIRECT.plan
    assert counted["n"] == 0


# --------------------------------------------------------------------------- the engine and the CLI


def test_the_engine_runs_the_measured_plan_and_says_so(config, counted, fast, content, style, monkeypatch):
    from napari_nst import iter_stylize

    plans = []
    real = engine._prepare

    def spy(*a, **k):
        ctx = real(*a, **k)
        plans.append(ctx.plan)
        return ctx

    monkeypatch.setattr(engine, "_prepare", spy)
    recs = list(iter_stylize(content, style, **fast))
    assert counted["n"] == 1
    assert "measured the fastest compute plan" in recs[0].note and recs[0].precision == "float32"
    again = list(iter_stylize(content, style, **fast))
    pinned = list(iter_stylize(content, style, **fast, precision="float32"))
    opts = Options.from_kwargs(**fast)
    with use_levers(Levers(winograd=True)):  # an engine lever (measurement only)
        knob = list(engine.run(content.astype(np.float32) / 255, style.astype(np.float32) / 255, opts))
    assert counted["n"] == 1 and again[0].note == "" and pinned[-1].precision == "float32"
    # oneDNN's direct convolutions, as measured; a knob (NNPACK's Winograd) still wins
    assert plans[:3] == [F32_DIRECT.plan] * 3 and plans[3].winograd
    assert np.isfinite(again[-1].losses["total"]) and len(knob) == fast["steps"]


def test_cli_tune_measures_shows_and_keeps_the_table(config, counted, capsys):
    from napari_nst.cli import main

    assert main(["tune", "--show"]) == 0
    assert "no measured plans" in capsys.readouterr().out
    assert main(["tune", "--size", "64", "--model", "vgg16", "--device", "cpu", "--budget", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "size class 64 px" in out and "float32, contiguous, direct conv" in out and "auto, float32" in out
    assert (config / tune.CACHE_FILE).exists() and counted["n"] == 1
    assert main(["tune", "--show"]) == 0
    assert "size class 64 px" in capsys.readouterr().out
    assert main(["tune", "--budget", "0"]) == 1
    assert "--budget must be a positive" in capsys.readouterr().err


def test_a_run_measured_fastest_with_wide_winograd_uses_it_and_releases_its_kernels(
    config, caps, fast, content, style, monkeypatch
):
    from napari_nst import iter_stylize
    from napari_nst.core.encoder import vgg, winograd

    caps(bf16=False, nnpack=False)
    seconds = {F32_DIRECT: 0.3, F32_CL: 0.25, F32_CL_WIDE: 0.1}
    tune.store(_table(tune.machine_key(CPU, (24, 32)), seconds))  # fast's 32 px runs: this size class
    calls = []
    real = winograd.WinogradConv3x3Fn.apply
    monkeypatch.setattr(winograd.WinogradConv3x3Fn, "apply", lambda *a: calls.append(1) or real(*a))
    recs = list(iter_stylize(content, style, **fast))
    assert calls  # the wide layers (conv3_2 on) went through it
    assert np.isfinite(recs[-1].losses["total"]) and len(recs) == fast["steps"]
    nets = [net for _, net in vgg._NETS.values()]  # the engine's networks, kept for the next run
    wide = [m for n in nets for m in n.modules() if isinstance(m, vgg.Conv3x3) and m.winograd_wide]
    assert wide and all(m._u is None for m in wide)  # the transformed kernels went with the run


def test_a_run_measured_fastest_with_winograd_from_128_channels_runs_conv3_1_through_it(
    config, caps, fast, content, style, monkeypatch
):
    from napari_nst import iter_stylize
    from napari_nst.core.encoder import vgg, winograd

    caps(bf16=False, nnpack=False)
    seconds = {F32_DIRECT: 0.3, F32_CL: 0.25, F32_CL_WIDE: 0.1, F32_CL_128: 0.08}
    tune.store(_table(tune.machine_key(CPU, (24, 32)), seconds))
    layers: set[int] = set()
    real = winograd.correlate

    def spy(x, u, transpose=False, mirror=False):
        layers.add(u.shape[2])  # the layer's input channels
        return real(x, u, transpose=transpose, mirror=mirror)

    monkeypatch.setattr(winograd, "correlate", spy)
    recs = list(iter_stylize(content, style, **fast))
    assert np.isfinite(recs[-1].losses["total"]) and len(recs) == fast["steps"]
    assert 128 in layers and min(layers) == 128  # conv2_2 or conv3_1, never a 64-channel layer
    nets = [net for _, net in vgg._NETS.values()]
    used = [m for n in nets for m in n.modules() if isinstance(m, vgg.Conv3x3) and m.in_channels >= 128]
    assert used and all(m._u is None for m in used)  # released with the run


def test_the_float32_finish_of_a_bfloat16_run_keeps_no_winograd_kernels(
    config, caps, fast, content, style, monkeypatch
):
    """A bfloat16 run finishes in the fastest float32 plan without napari-nst's Winograd, whose
    kernels would come on top of a run sized for bfloat16; an explicit float32 run still gets it."""
    from napari_nst import iter_stylize

    caps(bf16=True, nnpack=False)  # before the key, which names whether bfloat16 is fast
    seconds = {BF16_CL_LEAN: 0.1, BF16_CL: 0.12, F32_DIRECT: 0.3, F32_CL: 0.25, F32_CL_WIDE: 0.15}
    table = _table(tune.machine_key(CPU, (24, 32)), seconds)
    assert table.choose("float32") == F32_CL_WIDE
    assert table.choose("float32", kernels=False) == F32_CL
    assert table.choose("auto", kernels=False) == BF16_CL_LEAN  # the others are unchanged
    tune.store(table)
    plans = []
    real = engine._set_plan
    monkeypatch.setattr(engine, "_set_plan", lambda ctx, dt, plan: plans.append((dt, plan)) or real(ctx, dt, plan))
    with use_levers(Levers(finish=2)):  # go on in float32 after the level's 2nd evaluation
        recs = list(iter_stylize(content, style, **fast))
    finished = [plan for dtype, plan in plans if dtype is None]
    assert finished and all(p == F32_CL.plan for p in finished)
    assert np.isfinite(recs[-1].losses["total"])


def test_a_run_that_fits_only_without_kept_winograd_kernels_makes_them_at_each_call(
    config, caps, fast, content, style, monkeypatch
):
    """max_memory between the float32 estimate with the transformed kernels made at each call and
    with them kept: the run is not tiled, it keeps the Winograd plan measured fastest, its layers
    make the kernels at every call (none is kept), and its records say why. With room for them, the
    same small run keeps them."""
    from napari_nst import iter_stylize
    from napari_nst.core.compute import memory
    from napari_nst.core.encoder import vgg, winograd

    caps(bf16=False, nnpack=False)
    seconds = {F32_DIRECT: 0.3, F32_CL: 0.25, F32_CL_WIDE: 0.1}
    tune.store(_table(tune.machine_key(CPU, (24, 32)), seconds))
    kernels, kept = [], []
    real = winograd.WinogradConv3x3Fn.apply

    def spy(x, k, bias):
        kernels.append(k.dim())  # 3: a kept transform (36, Co, Ci); 4: the weight, transformed now
        kept.append(
            any(m._u is not None for n in vgg._NETS.values() for m in n[1].modules() if isinstance(m, vgg.Conv3x3))
        )
        return real(x, k, bias)

    monkeypatch.setattr(winograd.WinogradConv3x3Fn, "apply", spy)
    plans = []
    set_plan = engine._set_plan
    monkeypatch.setattr(engine, "_set_plan", lambda ctx, dt, plan: plans.append(plan) or set_plan(ctx, dt, plan))
    assert memory.keeps_kernels((24, 32))  # small enough to keep them, were there room
    need = memory.estimate_memory((24, 32), "vgg16", "float32")
    lean = memory.estimate_memory((24, 32), "vgg16", "float32", kernels=False)
    assert need - lean == memory.winograd_bytes("vgg16") - memory.winograd_call_bytes("vgg16")
    cap = (need + lean) // 2
    recs = list(iter_stylize(content, style, **fast, precision="float32", max_memory=cap))
    assert kernels and set(kernels) == {4} and not any(kept) and not plans  # the measured plan, kernels per call
    assert "making the Winograd kernels at each call" in recs[0].note and recs[-1].tile_size == 0
    assert np.isfinite(recs[-1].losses["total"])
    kernels.clear()
    recs = list(iter_stylize(content, style, **fast, precision="float32"))
    assert kernels and set(kernels) == {3} and np.isfinite(recs[-1].losses["total"])
