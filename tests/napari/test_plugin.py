"""The plugin as napari sees it: manifest, menus, sample data, pickers, tooltips, remembered settings,
and the pure layer -> array conversion and pastiche placement."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from nst_helpers import open_widget, world_extent

from napari_nst.core.options import CPU_SIZE, CPU_STEPS, GPU_SIZE, Options

pytestmark = pytest.mark.gui


def test_manifest_validates_like_npe2_validate():
    from npe2 import PluginManifest

    pm = PluginManifest._from_package_or_name("napari-nst")  # what `npe2 validate napari-nst` does
    pm.validate_imports()
    assert [w.display_name for w in pm.contributions.widgets] == ["Style Transfer"]
    widget_cmd = pm.contributions.widgets[0].command
    assert [m.command for m in pm.contributions.menus["napari/layers/filter"]] == [widget_cmd]
    assert {s.key for s in pm.contributions.sample_data} >= {"content", "style", "pair"}
    assert "torch" not in sys.modules


def test_sample_data_opens_and_fills_the_pickers(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-nst", "pair")
    assert [lay.name for lay in viewer.layers] == ["brush strokes", "chelsea"]
    for lay in viewer.layers:
        assert lay.rgb and lay.data.dtype == np.uint8 and min(lay.data.shape[:2]) >= 256
    assert viewer.layers["brush strokes"].data.std() > 20  # a real texture, not a flat image
    widget = open_widget(viewer)
    assert widget.content.value is viewer.layers["chelsea"] or widget.content.value == viewer.layers["chelsea"]
    assert widget.style.value == viewer.layers["brush strokes"]


def test_pickers_follow_layers(make_napari_viewer, images):
    viewer = make_napari_viewer()
    widget = open_widget(viewer)
    assert widget.content.choices == () and widget.style.choices == ()
    a = viewer.add_image(images[0], name="a")
    b = viewer.add_image(images[1], name="b", rgb=True)
    viewer.add_points(np.zeros((1, 2)))  # not an image: never offered
    names = lambda w: [w.native.itemText(i) for i in range(w.native.count())]  # noqa: E731
    assert sorted(names(widget.content)) == ["a", "b"]
    assert widget.content.value != widget.style.value  # two images: two different layers
    a.name = "renamed"
    assert "renamed" in names(widget.style) and "a" not in names(widget.style)
    viewer.layers.remove(b)
    assert names(widget.style) == ["renamed"] and widget.style.value == a


def test_every_control_has_a_tooltip(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_widget(viewer)
    named = [
        "content",
        "style",
        "size",
        "steps",
        "style_weight",
        "content_weight",
        "model",
        "weights",
        "device",
        "seed",
        "run",
        "content_layers",
        "style_layers",
        "style_layer_weights",
        "pooling",
        "style_loss",
        "optimizer",
        "init",
        "scales",
        "pyramid",
        "style_scale",
        "tv_weight",
        "precision",
        "continue_run",
        "show_advanced",
    ]
    for name in named:
        tip = getattr(widget, name).tooltip
        assert tip and len(tip) > 10, name
    assert "Long edge" in widget.size.tooltip  # from the Options docstring
    assert widget.worker is None and widget.run.text == "Run"


def test_cpu_defaults_and_remembered_settings(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_widget(viewer)
    # no GPU on this machine: the quicker CPU defaults; the rest from the engine's Options
    assert widget._gpu is False
    assert widget.size.value == CPU_SIZE and widget.steps.value == CPU_STEPS
    assert widget.options()["model"] == Options().model and widget.device.value == Options().device
    widget.steps.value = 77  # the user changes it ...
    widget.model.value = "vgg16"
    widget.show_advanced.value = True
    # ... a GPU turning up later changes only what the user did not set
    widget._on_probe_done({"cuda": ["Test GPU"], "mps": False})
    assert widget.size.value == GPU_SIZE and widget.steps.value == 77
    viewer2 = make_napari_viewer()
    widget2 = open_widget(viewer2)  # next session
    assert widget2.steps.value == 77 and widget2.model.value == "vgg16"
    assert widget2.show_advanced.value and not widget2.scales.native.isHidden()
    assert widget2.size.value == CPU_SIZE  # never set by the user: machine default
    widget2.reset_defaults.clicked.emit()
    assert widget2.steps.value == CPU_STEPS and widget2.options()["model"] == Options().model


# --------------------------------------------------------------------------- pure functions


def test_layers_are_read_as_shown():
    from napari.layers import Image
    from nst_helpers import read_as_a_run_does as layer_to_rgb

    gray16 = np.array([[0, 1000], [2000, 4000]], np.uint16).repeat(4, 0).repeat(4, 1)
    out, note = layer_to_rgb(Image(gray16, contrast_limits=(1000, 3000)), long_edge=8)
    assert out.shape == (8, 8, 3) and out.dtype == np.float32 and note is None
    np.testing.assert_allclose(out[0, [0, 4]], [[0, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(out[4, [0, 4]], [[0.5] * 3, [1.0] * 3])

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    rgba[:4, :, 3] = 0  # transparent top half: black, as on napari's canvas
    out, _ = layer_to_rgb(Image(rgba, rgb=True), long_edge=8)
    np.testing.assert_allclose(out[6, 0], [200 / 255, 0, 0], atol=1e-6)
    np.testing.assert_allclose(out[0, 0], [0, 0, 0])

    f = np.linspace(-1, 3, 64, dtype=np.float64).reshape(8, 8)
    layer = Image(f, contrast_limits=(0, 2), gamma=2.0, colormap="green")
    out, note = layer_to_rgb(layer, long_edge=8)
    assert "colormap 'green'" in note
    np.testing.assert_allclose(out[..., 0], 0, atol=1e-6)
    np.testing.assert_allclose(out[..., 1], np.clip(f / 2, 0, 1) ** 2, atol=1e-5)
    assert layer.data is f and f[0, 0] == -1  # untouched


def test_pastiche_placement_covers_the_content_exactly():
    from napari.layers import Image

    from napari_nst._run.layer_view import pastiche_placement

    content = Image(np.zeros((300, 451)), scale=(0.3, 0.7), translate=(12.0, -4.0), rotate=25)
    for working in [(300, 451), (170, 256), (43, 64)]:
        out = Image(
            np.zeros((*working, 3), np.float32), rgb=True, **pastiche_placement(content, (0, 1), (300, 451), working)
        )
        np.testing.assert_allclose(world_extent(out), world_extent(content), atol=1e-9)


def test_demo_sets_everything_up(make_napari_viewer, monkeypatch, vgg16_weights):
    from napari_nst._demo import setup_demo

    monkeypatch.setenv("NAPARI_NST_WEIGHTS", str(vgg16_weights))
    viewer = make_napari_viewer()
    widget = setup_demo(viewer)
    assert widget.content.value == viewer.layers["chelsea"]
    assert widget.style.value == viewer.layers["brush strokes"]
    assert str(widget.weights.value) == str(vgg16_weights)
    if "vgg16" in vgg16_weights.name:
        assert widget.model.value == "vgg16"
    assert widget.worker is None and widget.settings.touched == set()  # nothing remembered from the demo


def test_every_form_option_has_a_generated_field(make_napari_viewer):
    from napari_nst.core.options import specs

    widget = open_widget(make_napari_viewer())
    form = [s for s in specs() if s.form]
    missing = [s.name for s in form if s.name not in widget.form.fields]
    assert not missing, f"Options fields with form=True but no field in the widget: {missing}"
    for s in form:
        field = getattr(widget, s.name)
        assert field is widget.form.fields[s.name] and field.label.startswith(s.label)  # a log slider adds "×k"
        assert s.help and field.tooltip.startswith(s.help), s.name
        assert (field in widget.form.advanced()) == s.advanced, s.name
    assert set(widget.options()) == {s.name for s in form}


def test_remembered_settings_are_shown_and_stale_weights_forgotten(make_napari_viewer, tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not really weights")
    widget = open_widget(make_napari_viewer())
    assert widget.remembered.value == "" and widget._remembered_row.native.isHidden()
    widget.steps.value = 40
    widget.weights.value = str(weights)
    widget2 = open_widget(make_napari_viewer())  # next session
    assert widget2.steps.value == 40 and str(widget2.weights.value) == str(weights)
    assert widget2.remembered.value == "Using remembered settings: Steps, Weights"
    assert not widget2._remembered_row.native.isHidden()
    weights.unlink()  # the file is gone: never restored
    widget3 = open_widget(make_napari_viewer())
    assert widget3.options()["weights"] is None and widget3.remembered.value == "Using remembered settings: Steps"
    widget3.forget.clicked.emit()
    assert (
        widget3.steps.value == CPU_STEPS
        and widget3.remembered.value == ""
        and widget3._remembered_row.native.isHidden()
    )
    widget4 = open_widget(make_napari_viewer())
    assert widget4.steps.value == CPU_STEPS and widget4.settings.touched == set()
