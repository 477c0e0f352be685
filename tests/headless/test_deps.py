"""A torchvision that cannot be imported (built for another torch, missing): the first error the
user meets names the torchvision to install, in Python, on the command line and from the engine's
child process (what the napari widget uses)."""

from __future__ import annotations

import builtins

import pytest
import torch

from napari_nst.cli import main
from napari_nst.core import deps
from napari_nst.core.deps import install_message, matching_torchvision
from napari_nst.core.encoder import vgg
from napari_nst.core.errors import InstallError

NMS = "operator torchvision::nms does not exist"  # what torchvision 0.X says when built for another torch


def test_the_torchvision_for_each_torch():
    assert matching_torchvision("2.14.1") == "0.29"
    assert matching_torchvision("2.14.1+cu130") == "0.29"
    assert matching_torchvision("2.5.0") == "0.20"
    assert matching_torchvision("2.0.1") == "0.15"
    assert matching_torchvision("1.13.1") is None
    assert matching_torchvision("nonsense") is None


def test_messages_name_what_to_install():
    exc = RuntimeError(NMS)
    msg = install_message(exc, "2.14.1", "0.27.0")
    assert msg.startswith('torchvision 0.27.0 does not match torch 2.14.1: install matching versions (pip install "')
    assert '"torchvision==0.29.*"' in msg and NMS in msg
    assert "--index-url" not in msg  # a torch from PyPI: torchvision from PyPI too
    cuda = install_message(exc, "2.14.1+cu130", "0.27.0")
    assert '"torchvision==0.29.*" --index-url https://download.pytorch.org/whl/cu130' in cuda
    same = install_message(exc, "2.14.1+cpu", "0.29.1+cu130")  # matching versions, two builds mixed
    assert same.startswith("torchvision 0.29.1+cu130 cannot be imported with torch 2.14.1+cpu")
    assert 'pip install --force-reinstall "torch==2.14.1" "torchvision==0.29.*"' in same and "whl/cpu" in same
    missing = install_message(ModuleNotFoundError("No module named 'torchvision'"), "2.14.1", None)
    assert missing.startswith("torchvision is not installed") and '"torchvision==0.29.*"' in missing
    for m in (msg, cuda, same, missing):  # and how to do without it
        assert "--weights PATH" in m and "NAPARI_NST_WEIGHTS" in m and "Weights field" in m


@pytest.fixture
def broken_torchvision(monkeypatch):
    """``import torchvision`` raises what a torchvision built for another torch raises; its
    metadata says 0.27.0. Returns the message's expected start for this torch."""
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "torchvision" or name.startswith("torchvision."):
            raise RuntimeError(NMS)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(deps, "installed_version", lambda dist: "0.27.0" if dist == "torchvision" else None)
    monkeypatch.delenv(vgg.WEIGHTS_ENV, raising=False)
    vgg._cached_features.cache_clear()  # torchvision's weights must be asked for (not an earlier test's)
    want = matching_torchvision(str(torch.__version__))
    return f"torchvision 0.27.0 does not match torch {torch.__version__}: install matching versions", want


def test_python_api_names_the_torchvision_to_install(broken_torchvision, content, style):
    from napari_nst import stylize

    head, want = broken_torchvision
    with pytest.raises(InstallError) as info:
        stylize(content, style, size=32, steps=1, model="vgg16", device="cpu")  # torchvision's weights
    msg = str(info.value)
    assert msg.startswith(head) and f'"torchvision=={want}.*"' in msg and NMS in msg


def test_command_line_names_the_torchvision_to_install(broken_torchvision, content, style, tmp_path, capsys):
    from PIL import Image

    head, want = broken_torchvision
    cp, sp = tmp_path / "c.png", tmp_path / "s.png"
    Image.fromarray(content).save(cp)
    Image.fromarray(style).save(sp)
    out = tmp_path / "out.png"
    code = main(["stylize", str(cp), str(sp), "-o", str(out), "--size", "32", "--steps", "1", "--model", "vgg16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and not out.exists()
    assert err[-1].startswith(f"napari-nst: error: {head}") and f'"torchvision=={want}.*"' in err[-1], err


def test_a_weights_file_needs_no_torchvision(broken_torchvision, content, style, fast):
    from napari_nst import stylize

    assert stylize(content, style, **{**fast, "steps": 1}).shape == (23, 32, 3)


def fake_torchvision(root, version="0.27.0"):
    """A torchvision package that fails at import as one built for another torch does, with its
    metadata (``version``); put ``root`` first on PYTHONPATH."""
    (root / "torchvision").mkdir(parents=True)
    (root / "torchvision" / "__init__.py").write_text(f"raise RuntimeError({NMS!r})\n")
    info = root / f"torchvision-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torchvision\nVersion: {version}\n")
    return root


def test_the_engine_process_sends_the_message_back_and_ends(content, style, tmp_path, monkeypatch):
    """The napari widget's path: the engine in a child process; the child then ends, so that the
    next run, after the user has installed the right torchvision, imports it afresh."""
    import os

    from napari_nst.core.process import client as remote

    fake = fake_torchvision(tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.delenv(vgg.WEIGHTS_ENV, raising=False)
    proc = remote.EngineProcess(content, style, size=32, steps=1, model="vgg16", device="cpu")
    try:
        with pytest.raises(InstallError) as info:
            list(proc)
    finally:
        remote.shutdown_engines()  # none left behind, whatever happened
    want = matching_torchvision(str(torch.__version__))
    assert str(info.value).startswith(f"torchvision 0.27.0 does not match torch {torch.__version__}")
    assert f'"torchvision=={want}.*"' in str(info.value)
    assert proc._child is not None and proc._child.proc.wait(60) == 0  # ended by itself
    assert proc.pid not in remote.idle_engines()
