"""Hostile and broken files: weights (pickles carrying code, truncated, wrong network ...) and images
(truncated, zero bytes, wrong extension, 16-bit, palette, CMYK, EXIF rotation, enormous headers).

Each case either works or ends in a ``ValueError`` subclass (``WeightsError``, ``ImageError``)
whose message names the file and says what is wrong; the command line turns it into a non-zero
exit and one line on stderr.
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from napari_nst.cli import main
from napari_nst.core.api import stylize
from napari_nst.core.encoder import vgg
from napari_nst.core.errors import ImageError, WeightsError
from napari_nst.core.image.files import read_image


@pytest.fixture
def fast(fast):
    """The shared quick options, single scale: these tests are about faults, not coarse-to-fine levels."""
    return {**fast, "scales": 1}


ODD_DIR = "dir with spaces ünïcødé 图像"
ODD_NAME = "wéights ✓ (copy).pth"


@pytest.fixture(autouse=True)
def _fresh_weights_cache():
    """build_vgg caches the last file read: every test here starts (and ends) without it."""
    vgg._cached_features.cache_clear()
    yield
    vgg._cached_features.cache_clear()


# --------------------------------------------------------------------------- weights: code in a pickle


class Payload:
    """Unpickling this creates ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _evil_files(tmp_path: Path, vgg16_random: Path) -> list[tuple[Path, Path]]:
    """(weights file, marker) pairs: the payload in torch's zip format, a legacy torch file and a raw pickle,
    each next to real tensors so that the file otherwise looks like a VGG state dict."""
    state = torch.load(vgg16_random, weights_only=True)
    out = []
    for kind in ("zip", "legacy", "raw"):
        marker = tmp_path / f"PWNED-{kind}"
        path = tmp_path / f"evil-{kind}.pth"
        evil = dict(state, **{"features.0.extra": Payload(marker)})
        if kind == "zip":
            torch.save(evil, path)
        elif kind == "legacy":
            torch.save(evil, path, _use_new_zipfile_serialization=False)
        else:
            with open(path, "wb") as fh:
                pickle.dump(evil, fh)
        out.append((path, marker))
    return out


def test_pickled_code_in_weights_is_refused_and_never_runs(tmp_path, vgg16_random):
    for path, marker in _evil_files(tmp_path, vgg16_random):
        with pytest.raises(WeightsError, match="refused to load") as info:
            vgg.build_vgg("vgg16", ["relu1_1"], weights=path)
        assert "weights_only=True" in str(info.value) and str(path) in str(info.value)
        assert not marker.exists(), f"the payload in {path.name} ran"


def test_the_payload_is_live(tmp_path, vgg16_random):
    """Proof that the refusal above matters: the same files run their code when loaded unsafely."""
    for path, marker in _evil_files(tmp_path, vgg16_random):
        if path.name.endswith("raw.pth"):
            with open(path, "rb") as fh:
                pickle.load(fh)  # noqa: S301 - the point of the test
        else:
            torch.load(path, weights_only=False)  # noqa: S614 - the point of the test
        assert marker.exists(), path.name


def test_pickled_code_refused_through_api_and_cli(tmp_path, vgg16_random, content, style, capsys):
    (path, marker), *_ = _evil_files(tmp_path, vgg16_random)
    with pytest.raises(WeightsError, match="refused"):
        stylize(content, style, size=32, steps=1, scales=1, model="vgg16", weights=str(path), device="cpu")
    cp, sp, out = tmp_path / "c.png", tmp_path / "s.png", tmp_path / "o.png"
    Image.fromarray(content).save(cp)
    Image.fromarray(style).save(sp)
    code = main(
        [
            "stylize",
            str(cp),
            str(sp),
            "-o",
            str(out),
            "--size",
            "32",
            "--scales",
            "1",
            "--steps",
            "1",
            "--model",
            "vgg16",
            "--weights",
            str(path),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("napari-nst: error: refused") and "\n" not in err
    assert not marker.exists() and not out.exists()


# --------------------------------------------------------------------------- weights: broken files


def _weights_cases(tmp_path: Path, vgg16_random: Path) -> list[tuple[str, Path, str]]:
    state = torch.load(vgg16_random, weights_only=True)
    data = vgg16_random.read_bytes()
    cases: list[tuple[str, Path, str]] = []

    def add(name: str, match: str, raw: bytes | None = None, obj=None) -> None:
        p = tmp_path / f"{name}.pth"
        if raw is not None:
            p.write_bytes(raw)
        else:
            torch.save(obj, p)
        cases.append((name, p, match))

    add("truncated_half", "truncated or corrupt", raw=data[: len(data) // 2])
    add("truncated_head", "truncated or corrupt", raw=data[:64])
    add("empty", "empty", raw=b"")
    add("text", "not a PyTorch weights file", raw=b"these are not the weights you are looking for\n")
    add("safetensors_like", "not a PyTorch weights file", raw=struct.pack("<Q", 2) + b"{}")
    add("a_list", "does not hold a VGG state dict", obj=[1, 2, 3])
    add("a_tensor", "does not hold a VGG state dict", obj=torch.zeros(3))
    add("resnet", "no VGG convolution weights", obj={"conv1.weight": torch.zeros(64, 3, 7, 7)})
    bad_shape = dict(state)
    bad_shape["features.0.weight"] = torch.zeros(64, 1, 3, 3)  # a grayscale first layer
    add("wrong_shape", "expected (64, 3, 3, 3)", obj=bad_shape)
    nan = dict(state)
    nan["features.2.weight"] = torch.full_like(state["features.2.weight"], float("nan"))
    add("nan", "NaN or infinite", obj=nan)
    missing = {k: v for k, v in state.items() if not k.startswith("features.0.")}
    add("missing_layer", "lacks features.0.weight", obj=missing)
    return cases


def test_broken_weights_files_give_clear_errors(tmp_path, vgg16_random):
    for name, path, match in _weights_cases(tmp_path, vgg16_random):
        with pytest.raises(WeightsError) as info:
            vgg.build_vgg("vgg16", ["relu1_1", "relu2_1"], weights=path)
        msg = str(info.value)
        assert match in msg, f"{name}: {msg}"
        assert str(path) in msg, f"{name}: the message does not name the file: {msg}"
        assert len(msg) < 600, f"{name}: the message is not short: {msg}"


def test_wrong_architecture_names_the_right_model(tmp_path):
    torch.manual_seed(3)
    net19 = vgg.VGGFeatures("vgg19", [vgg.layer_names("vgg19")[-1]])  # all 16 convolutions
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in net19.layers.state_dict().items()}, path)
    with pytest.raises(WeightsError, match="pass model='vgg19'"):
        vgg.build_vgg("vgg16", ["relu5_1"], weights=path)
    vgg.build_vgg("vgg19", ["relu5_1"], weights=path)  # and with the right model it loads


def test_directory_and_fifo_as_weights(tmp_path):
    with pytest.raises(WeightsError, match="is a directory"):
        vgg.build_vgg("vgg16", ["relu1_1"], weights=tmp_path)
    fifo = tmp_path / "pipe.pth"
    os.mkfifo(fifo)
    with pytest.raises(WeightsError, match="empty"):  # not a hang waiting for a writer
        vgg.build_vgg("vgg16", ["relu1_1"], weights=fifo)


def test_weights_path_with_spaces_and_non_ascii_works(tmp_path, vgg16_random):
    folder = tmp_path / ODD_DIR
    folder.mkdir()
    odd = folder / ODD_NAME
    shutil.copy(vgg16_random, odd)
    x = torch.rand(1, 3, 16, 16)
    ref = vgg.build_vgg("vgg16", ["relu2_1"], weights=vgg16_random)(x)["relu2_1"]
    got = vgg.build_vgg("vgg16", ["relu2_1"], weights=odd)(x)["relu2_1"]
    torch.testing.assert_close(got, ref)


def test_missing_weights_path_with_non_ascii_is_named(tmp_path, content, style):
    missing = tmp_path / ODD_DIR / ODD_NAME
    with pytest.raises(WeightsError, match="no weights file") as info:
        stylize(content, style, size=32, steps=1, scales=1, model="vgg16", weights=str(missing), device="cpu")
    assert ODD_NAME in str(info.value)


# --------------------------------------------------------------------------- images


def _rgb(h: int = 30, w: int = 50) -> np.ndarray:
    """An asymmetric picture: a red block at the top left, a blue one at the bottom right."""
    img = np.full((h, w, 3), 128, np.uint8)
    img[:8, :12] = (255, 0, 0)
    img[-6:, -10:] = (0, 0, 255)
    return img


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width: int, height: int, bit_depth: int, color_type: int, raw_rows: bytes) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB; a fake header needs no pixel data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw_rows))
        + _png_chunk(b"IEND", b"")
    )


def test_wrong_extensions(tmp_path):
    img = _rgb()
    png_as_jpg = tmp_path / "really a png.jpg"
    Image.fromarray(img).save(png_as_jpg, format="PNG")
    np.testing.assert_array_equal(read_image(png_as_jpg), img)  # lossless: read as the PNG it is
    import tifffile

    tif_as_png = tmp_path / "tiff.png"
    tifffile.imwrite(tif_as_png, img.astype(np.uint16) * 257, photometric="rgb")
    np.testing.assert_array_equal(read_image(tif_as_png), img.astype(np.uint16) * 257)
    text = tmp_path / "notes.png"
    text.write_text("this is a text file\n")
    with pytest.raises(ImageError, match="cannot read .*notes.png.* as an image"):
        read_image(text)


@pytest.mark.parametrize("fmt, cut", [("PNG", 0.5), ("JPEG", 0.5), ("PNG", 0.02), ("TIFF", 0.5)])
def test_truncated_images(tmp_path, fmt, cut):
    full = tmp_path / f"full.{fmt.lower()}"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full, format=fmt)
    data = full.read_bytes()
    part = tmp_path / f"part.{fmt.lower()}"
    part.write_bytes(data[: max(8, int(len(data) * cut))])
    with pytest.raises(ImageError, match="truncated or corrupt") as info:
        read_image(part)
    assert "part." in str(info.value)


def test_zero_byte_directory_fifo_and_missing(tmp_path):
    empty = tmp_path / "empty.png"
    empty.touch()
    with pytest.raises(ImageError, match="empty"):
        read_image(empty)
    with pytest.raises(ImageError, match="is a directory"):
        read_image(tmp_path)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="empty"):  # not a hang waiting for a writer
        read_image(fifo)
    with pytest.raises(ImageError, match="no image file") as info:
        read_image(tmp_path / ODD_DIR / "pïcture.png")
    assert "pïcture.png" in str(info.value)


def test_non_ascii_path_with_spaces_loads(tmp_path):
    folder = tmp_path / ODD_DIR
    folder.mkdir()
    p = folder / "my picture – ünïcødé.png"
    Image.fromarray(_rgb()).save(p)
    np.testing.assert_array_equal(read_image(p), _rgb())


def test_sixteen_bit_images(tmp_path):
    import tifffile

    gray = (np.arange(30 * 50, dtype=np.uint32).reshape(30, 50) * 43 % 65536).astype(np.uint16)
    p = tmp_path / "gray16.png"
    Image.fromarray(gray).save(p)
    got = read_image(p)
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, gray)  # all 16 bits kept
    rgb16 = (np.random.default_rng(1).random((30, 50, 3)) * 65535).astype(np.uint16)
    t = tmp_path / "rgb16.tif"
    tifffile.imwrite(t, rgb16, photometric="rgb")
    np.testing.assert_array_equal(read_image(t), rgb16)
    planar = tmp_path / "planar16.tif"
    tifffile.imwrite(planar, np.moveaxis(rgb16, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(planar), rgb16)
    # 16-bit RGB PNG: Pillow reads it at 8 bits per channel (documented); it loads, values kept to 8 bits
    rows = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(30))
    p16 = tmp_path / "rgb16.png"
    p16.write_bytes(_png(50, 30, 16, 2, rows))
    got = read_image(p16)
    assert got.shape == (30, 50, 3)
    expected8 = (rgb16 >> 8).astype(np.uint8) if got.dtype == np.uint8 else rgb16
    np.testing.assert_array_equal(got, expected8)


def test_palette_and_cmyk(tmp_path):
    img = _rgb()
    pal = Image.fromarray(img).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    p = tmp_path / "palette.png"
    pal.save(p)
    got = read_image(p)
    assert got.shape == (30, 50, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.asarray(pal.convert("RGB")))
    pal.save(tmp_path / "palette_t.png", transparency=0)
    assert read_image(tmp_path / "palette_t.png").shape == (30, 50, 4)  # transparency kept as alpha
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(img).convert("CMYK").save(cmyk, quality=95)
    got = read_image(cmyk)
    assert got.shape == (30, 50, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - img.astype(int)).mean() < 12  # the colours survive CMYK and JPEG
    assert got[2, 2, 0] > 200 and got[2, 2, 2] < 60  # the red block is still red


@pytest.mark.parametrize("orientation, rotate", [(3, 2), (6, -1), (8, 1)])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_rotation_is_honoured(tmp_path, orientation, rotate, fmt):
    """Orientation 6 = 'rotate 90 degrees clockwise to display', 8 = counter-clockwise, 3 = 180."""
    img = _rgb()
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = orientation
    p = tmp_path / f"rotated.{fmt.lower()}"
    im.save(p, format=fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    got = read_image(p)
    want = np.rot90(img, k=rotate)
    assert got.shape == want.shape
    if fmt == "PNG":
        np.testing.assert_array_equal(got, want)
    else:
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 6


def test_enormous_png_header_refused_before_decoding(tmp_path, monkeypatch):
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png(100_000, 100_000, 8, 2, b"\x00" * 16))

    def no_decoding(self, *a, **k):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr(Image.Image, "convert", no_decoding)
    with pytest.raises(ImageError, match="too large") as info:
        read_image(huge)
    assert "100000" in str(info.value).replace(",", "") or "10000000000" in str(info.value)


def test_enormous_tiff_header_refused_before_decoding(tmp_path, monkeypatch):
    import tifffile

    p = tmp_path / "huge.tif"
    tifffile.imwrite(p, np.zeros((16, 16), np.uint8))
    data = bytearray(p.read_bytes())
    with tifffile.TiffFile(p) as tif:  # patch ImageWidth and ImageLength to 60000 px
        for tag in ("ImageWidth", "ImageLength"):
            t = tif.pages[0].tags[tag]
            fmt = "<H" if t.dtype == 3 else "<I"
            struct.pack_into(fmt, data, t.valueoffset, 60000)
    p.write_bytes(bytes(data))

    def no_decoding(self, *a, **k):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_decoding)
    with pytest.raises(ImageError, match="60000x60000"):
        read_image(p)


# --------------------------------------------------------------------------- images through the command line


@pytest.fixture
def good_files(tmp_path, style):
    sp = tmp_path / "style.png"
    Image.fromarray(style).save(sp)
    return sp


def _cli(content: Path, style: Path, out: Path, weights: str, *extra: str) -> int:
    return main(
        [
            "stylize",
            str(content),
            str(style),
            "-o",
            str(out),
            "--size",
            "32",
            "--scales",
            "1",
            "--steps",
            "1",
            "--model",
            "vgg16",
            "--weights",
            weights,
            "--device",
            "cpu",
            "--quiet",
            *extra,
        ]
    )


def test_cli_broken_images_exit_non_zero_with_one_line(tmp_path, good_files, fast, capsys):
    bad = {
        "zero.png": (b"", "empty"),
        "text.png": (b"not an image at all\n", "cannot read"),
        "huge.png": (_png(100_000, 100_000, 8, 2, b"\x00" * 16), "too large"),
    }
    ok = tmp_path / "ok.png"
    Image.fromarray(_rgb()).save(ok)
    data = ok.read_bytes()
    bad["cut.png"] = (data[: len(data) // 2], "truncated")
    for name, (raw, match) in bad.items():
        p = tmp_path / name
        p.write_bytes(raw)
        out = tmp_path / f"out-{name}"
        for args in ((p, good_files), (good_files, p)):  # as content, then as style
            code = _cli(*args, out, fast["weights"])
            err = capsys.readouterr().err.strip()
            assert code == 1, name
            assert err.startswith("napari-nst: error:") and "\n" not in err, err
            assert match in err and name in err, err
            assert not out.exists()
        code = _cli(ok, good_files, out, fast["weights"], "--init", str(p))  # as the starting image
        assert code == 1 and match in capsys.readouterr().err


def test_cli_bad_output_fails_before_the_run(tmp_path, good_files, fast, capsys, monkeypatch):
    import napari_nst.core.api as api

    def no_run(*a, **k):
        raise AssertionError("the run started")

    monkeypatch.setattr(api, "iter_stylize", no_run)
    ok = tmp_path / "ok.png"
    Image.fromarray(_rgb()).save(ok)
    cases = [
        (tmp_path / "out.xyz", ".xyz"),
        (tmp_path / "out", "without an extension"),
        (tmp_path / "no such folder" / "o.png", "does not exist"),
        (tmp_path, "is a directory"),
    ]
    for out, match in cases:
        assert _cli(ok, good_files, out, fast["weights"]) == 1
        err = capsys.readouterr().err.strip()
        assert match in err and "\n" not in err, err


def test_cli_odd_files_work(tmp_path, fast):
    """An EXIF-rotated JPEG content, a palette PNG named .jpg as style, weights and output in a folder
    with spaces and non-ASCII characters: one real run."""
    folder = tmp_path / ODD_DIR
    folder.mkdir()
    im = Image.fromarray(_rgb(30, 50))
    exif = im.getexif()
    exif[0x0112] = 6
    rotated = folder / "portrait ↻.jpg"
    im.save(rotated, exif=exif)
    pal = folder / "palette as.jpg"
    Image.fromarray(_rgb(40, 40)).convert("P").save(pal, format="PNG")
    weights = folder / ODD_NAME
    shutil.copy(fast["weights"], weights)
    out = folder / "out ✓.png"
    assert _cli(rotated, pal, out, str(weights)) == 0
    assert np.asarray(Image.open(out)).shape == (32, 19, 3)  # the portrait stays a portrait


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc/self/maps")
def test_weights_files_are_mapped_and_only_the_used_layers_checked(tmp_path, vgg16_random):
    """A torch.save (zip) weights file is memory-mapped (only the used layers' pages are read):
    a network to relu2_1 builds from a file whose conv5_3 is NaN, one that uses conv5_3 is refused
    naming it. A legacy (non-zip) file is read whole, as before."""
    state = torch.load(vgg16_random, weights_only=True)
    state["features.28.weight"] = torch.full_like(state["features.28.weight"], float("nan"))  # conv5_3
    path = tmp_path / "nan_in_conv5_3.pth"
    torch.save(state, path)
    vgg._cached_features.cache_clear()
    net = vgg.build_vgg("vgg16", ["relu1_1", "relu2_1"], weights=path)
    assert str(path) in Path("/proc/self/maps").read_text()
    assert torch.isfinite(net.layers[0].weight).all()
    with pytest.raises(WeightsError, match=r"features\.28\.weight has NaN"):
        vgg.build_vgg("vgg16", ["relu5_3"], weights=path)
    legacy = tmp_path / "legacy.pth"
    torch.save(torch.load(vgg16_random, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    vgg._cached_features.cache_clear()
    net = vgg.build_vgg("vgg16", ["relu1_1"], weights=legacy)
    assert str(legacy) not in Path("/proc/self/maps").read_text() and net.layers[0].weight.shape == (64, 3, 3, 3)
    vgg._cached_features.cache_clear()
