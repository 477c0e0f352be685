"""Which settings changed during a run go to the engine, and the status's words for them (no Qt)."""

from __future__ import annotations

from napari_nst._run.live import applied_text, describe, later_text, split_changes, status_lines


def _start(**extra):
    base = {"size": 256, "style_strength": 1.0, "tv_weight": 0.0, "content": "c", "styles": ("s",), "regions": None}
    return {**base, **extra}


def test_live_options_go_now_the_others_wait():
    start = _start()
    changes, later = split_changes(start, start, _start(style_strength=3.0, size=512))
    assert changes == {"style_strength": 3.0}
    assert later == ["Size (px)"]


def test_only_what_changed_since_the_last_update_is_sent():
    start = _start()
    sent = {"style_strength": 3.0, "tv_weight": 0.0}
    assert split_changes(start, sent, _start(style_strength=3.0)) == ({}, [])
    assert split_changes(start, sent, _start(style_strength=3.0, tv_weight=0.5)) == ({"tv_weight": 0.5}, [])


def test_a_run_that_takes_no_updates_waits_for_every_change():
    start = _start()
    assert split_changes(start, start, _start(style_strength=3.0), live=False) == ({}, ["Style strength"])


def test_blend_waits_once_the_style_images_changed():
    start = _start(style_blend=(1.0, 1.0))
    now = _start(style_blend=(1.0, 2.0), styles=("s", "t"))
    changes, later = split_changes(start, start, now)
    assert changes == {} and later == ["Style images", "Style blend"]


def test_the_words():
    assert describe({"style_strength": 3.0}) == "Style strength ×3"
    assert applied_text({"style_strength": 3.0, "preserve_color": None}, 41) == (
        "Style strength ×3, Keep colours off from step 41"
    )
    assert (
        describe({"style_weight": None, "style_layer_weights": (1.0, 2.0)}) == "Style weight auto, Layer weights 1, 2"
    )
    assert later_text(["Size (px)"]) == "Size (px) applies at the next Run"
    assert later_text(["Size (px)", "Network"]) == "Size (px), Network apply at the next Run"
    assert status_lines("", "", [], "") == ""
    assert status_lines("a", "b", ["Size (px)"], "bad") == (
        "\na\nb: from the next evaluation\nSize (px) applies at the next Run\nNot applied: bad"
    )


def test_layers_compare_by_identity_through_a_proxy():
    from napari_nst._run.live import differs

    class Proxy:
        def __init__(self, wrapped):
            self.__wrapped__ = wrapped

        def __eq__(self, other):  # a proxy compares its wrapped object with the other proxy
            return self.__wrapped__ == other

    layer, other = object(), object()
    assert not differs(Proxy(layer), Proxy(layer))
    assert differs(Proxy(layer), Proxy(other))
    assert not differs((Proxy(layer),), (Proxy(layer),))
    assert differs((Proxy(layer),), (Proxy(layer), Proxy(other)))
    assert differs(1.0, 2.0) and not differs(None, None) and differs(None, 0.0)
