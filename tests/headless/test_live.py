"""Options changed while a run goes on (``StyleRun.update``, core/live.py): checked at once in the
caller's thread, applied by the engine before its next evaluation, said by the record that applied
them; options that decide the size or the network are refused. Real runs on tiny images with
seeded random weights (conftest's ``fast``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_nst import iter_stylize, iter_stylize_stack
from napari_nst.core.errors import OptionError
from napari_nst.core.live import LIVE_OPTIONS, REFUSED, LiveChannel, LiveOptions, Updates
from napari_nst.core.objective.weights import strength_factor
from napari_nst.core.options import Options


def _long(fast: dict, **extra) -> dict:
    return {**fast, "steps": 1000, **extra}


def test_every_option_is_live_or_refused():
    names = set(Options.names())
    assert set(LIVE_OPTIONS) | set(REFUSED) == names
    assert not set(LIVE_OPTIONS) & set(REFUSED)


@pytest.mark.parametrize(
    "name, value",
    [
        ("size", 64),
        ("steps", 10),
        ("model", "vgg19"),
        ("device", "cpu"),
        ("precision", "float32"),
        ("pooling", "avg"),
        ("scales", 2),
    ],
)
def test_size_and_network_options_are_refused_at_the_call(content, style, fast, name, value):
    run = iter_stylize(content, style, **_long(fast))
    first = next(run)
    with pytest.raises(OptionError, match=rf"{name} cannot change during a run .*stop the run first"):
        run.update(**{name: value})
    rest = [next(run) for _ in range(2)]
    run.close()
    assert all(r.update is None and r.update_id == 0 for r in [first, *rest])


def test_bad_values_and_unknown_names_raise_at_the_call(content, style, fast):
    run = iter_stylize(content, style, **_long(fast))
    with pytest.raises(OptionError, match="did you mean 'style_strength'"):
        run.update(style_strenght=2)
    with pytest.raises(OptionError, match="style_strength must be between 0.1 and 10"):
        run.update(style_strength=100)
    with pytest.raises(OptionError, match="style_blend has 2 weights but there is 1 style image"):
        run.update(style_blend=(1, 2))
    with pytest.raises(OptionError, match="region_styles needs regions"):
        run.update(region_styles={1: 0})
    with pytest.raises(OptionError, match="at least one option"):
        run.update()
    run.close()


def test_an_update_applies_at_the_next_evaluation_and_its_record_says_so(content, style, fast):
    run = iter_stylize(content, style, **_long(fast, preview_every=1000))
    before = [next(run) for _ in range(3)]
    number = run.update(style_strength=3)
    assert number == 1
    after = next(run)
    assert after.step == before[-1].step + 1
    assert after.update == {"style_strength": 3.0} and after.update_id == 1
    assert after.image is not None  # the first image of the new objective, whatever preview_every says
    assert after.weights["style"] == pytest.approx(strength_factor(3) * before[-1].weights["style"])
    assert after.weights["content"] == pytest.approx(before[-1].weights["content"])
    later = next(run)
    assert later.update is None and later.update_id == 0 and later.image is None
    assert later.weights["style"] == pytest.approx(after.weights["style"])
    number = run.update(content_weight=2.0, tv_weight=0.5)
    rec = next(run)
    assert rec.update == {"content_weight": 2.0, "tv_weight": 0.5} and rec.update_id == number == 2
    assert rec.weights["content"] == 2.0 and rec.weights["tv"] == 0.5
    assert "tv" in rec.losses and np.isfinite(rec.losses["total"])
    run.close()
    assert run.settings["options"]["style_strength"] == 3.0  # what a resumed run must match now
    assert run.last().settings["options"]["content_weight"] == 2.0


def test_updates_within_one_evaluation_merge_the_later_wins(content, style, fast):
    run = iter_stylize(content, style, **_long(fast))
    next(run)
    run.update(style_strength=2)
    run.update(style_strength=4, tv_weight=0.1)
    rec = next(run)
    assert rec.update == {"style_strength": 4.0, "tv_weight": 0.1} and rec.update_id == 2
    run.close()


def test_updates_from_other_threads_arrive_in_the_order_of_their_numbers(content, style, fast):
    run = iter_stylize(content, style, **_long(fast))
    next(run)
    made: list[tuple[int, float]] = []
    lock = threading.Lock()

    def hammer(k: int) -> None:
        for i in range(25):
            value = round(0.2 + 0.05 * (k * 25 + i), 3)
            number = run.update(style_strength=value)
            with lock:
                made.append((number, value))

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    seen = [next(run) for _ in range(3)]  # the engine goes on meanwhile
    for t in threads:
        t.join()
    assert sorted(n for n, _ in made) == list(range(1, 101))
    newest = max(made)[1]
    for _ in range(3):
        seen.append(next(run))
    applied = [r for r in seen if r.update is not None]
    assert applied and applied[-1].update_id == 100
    assert applied[-1].update == {"style_strength": newest}
    assert [r.update_id for r in applied] == sorted(r.update_id for r in applied)
    run.close()


def test_colour_preservation_switches_during_the_run(content, style, fast):
    run = iter_stylize(content, style, **_long(fast))
    next(run)
    run.update(preserve_color="luminance")
    rec = next(run)
    assert rec.update == {"preserve_color": "luminance"} and np.isfinite(rec.losses["total"])
    next(run)
    run.close()
    kept = run.last()
    assert kept is not None and kept.state is not None  # the network's (luminance) image, as luminance runs keep

    run = iter_stylize(content, style, **_long(fast, preserve_color="luminance"))
    next(run)
    run.update(preserve_color=None)
    rec = next(run)
    assert rec.update == {"preserve_color": None}
    next(run)
    run.close()
    assert run.last().state is None  # back to the colour image


def test_blend_and_region_styles_change_during_the_run(content, style, fast):
    regions = np.zeros(content.shape[:2], np.int32)
    regions[:, 28:] = 1
    opts = _long(fast, regions=regions, region_styles={1: 0})
    run = iter_stylize(content, [style, style[::-1].copy()], **opts)
    first = next(run)
    run.update(region_styles={1: 1}, style_blend=(1.0, 3.0))
    rec = next(run)
    assert rec.update == {"region_styles": {1: 1}, "style_blend": (1.0, 3.0)}
    assert np.isfinite(rec.losses["total"]) and rec.losses["style"] != first.losses["style"]
    with pytest.raises(OptionError, match="region_styles maps label 1 to style 2"):
        run.update(region_styles={1: 2})
    with pytest.raises(OptionError, match="maps every label present in regions to None"):
        run.update(region_styles={0: None, 1: None})
    run.close()


def test_a_stack_run_refuses_updates_clearly(content, style, fast):
    run = iter_stylize_stack(np.stack([content, content]), style, **fast)
    with pytest.raises(OptionError, match="a stack run does not take options while it runs"):
        run.update(style_strength=2)
    run.close()


def test_live_options_check_against_the_options_as_updated(content):
    live = LiveOptions(Options.from_kwargs(style_layers="relu1_1,relu2_1"), 1)
    assert live.check({"style_layer_weights": "1,2"}) == {"style_layer_weights": (1.0, 2.0)}
    with pytest.raises(OptionError, match="style_layer_weights has 3 values but style_layers has 2"):
        live.check({"style_layer_weights": (1, 2, 3)})
    assert live.current.style_layer_weights == (1.0, 2.0)  # the refused update left it as it was


def test_the_mailbox_merges_and_empties():
    box = Updates()
    assert box.take() is None
    box.put({"a": 1})
    box.put({"a": 2, "b": 3})
    assert box.take() == (2, {"a": 2, "b": 3})
    assert box.take() is None
    box.put({"a": 5, "c": 1}, 5)
    box.put({"a": 4, "d": 1}, 4)  # arrives late: its value of a is older than update 5's
    assert box.take() == (5, {"a": 5, "c": 1, "d": 1})
    box.put({"a": 3}, 3)  # older than the value applied already
    assert box.take() is None
    assert box.put({"e": 1}) == 6
    sent = []
    channel = LiveChannel(Options(), 1, lambda n, o: sent.append((n, o)))
    channel.send({"tv_weight": 1})
    assert sent == [(1, {"tv_weight": 1.0})] and channel.updates.take() is None
