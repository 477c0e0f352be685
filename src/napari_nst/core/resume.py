"""Interrupted runs: the record kept beside an output file, and what a resumed run must match.

An interrupted (or periodically saved) run leaves, beside its output ``OUT`` (say ``out.png``):

- ``OUT`` itself: the newest pastiche, as any output (8-bit for PNG);
- ``OUT.nst-NNNNNNNN.npz``: the same image in full precision (float32, the working shape of the
  step ``NNNNNNNN`` it was made at; with the image the network evaluated in luminance mode), which
  a resumed run starts from;
- ``OUT.nst.json``: the step reached, of how many, the level, the losses, and the settings the run
  was made with (its options, and SHA-256 digests of its content and style images).

Each file is written atomically, the image state before the JSON that names it, so the JSON
always names a complete state. A run that finishes removes both (nothing is left to resume).
No torch here.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_nst.core.errors import OptionError
from napari_nst.core.options import Options
from napari_nst.core.records import Pastiche

VERSION = 1
#: the suffix of the JSON record beside an output file
SIDECAR = ".nst.json"
#: options that do not change the pastiche: a resumed run may change them
NOT_COMPARED = ("preview_every", "preview_interval", "device")


# ----------------------------------------------------------------------------- settings


def digest(array: Any) -> str:
    """SHA-256 of an array's dtype, shape and values (the images as the engine takes them)."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def run_settings(opts: Options, content: np.ndarray, style: Any) -> dict[str, Any]:
    """What a resumed run must match (JSON-friendly): the options, except those that do not
    change the pastiche (:data:`NOT_COMPARED`), with arrays (an ``init`` image, label images) by
    digest, and the digests of the content and of each style image."""
    options = {k: v for k, v in opts.as_dict().items() if k not in NOT_COMPARED}
    if isinstance(opts.init, np.ndarray):
        options["init"] = f"array {digest(opts.init)[:16]}"
    if opts.regions is not None:
        options["regions"] = f"labels {digest(opts.regions)[:16]}"
    if opts.style_regions is not None:
        options["style_regions"] = [None if r is None else f"labels {digest(r)[:16]}" for r in opts.style_regions]
    if opts.mask is not None:
        options["mask"] = f"mask {digest(opts.mask)[:16]}"
    styles = list(style) if isinstance(style, (list, tuple)) else [style]
    body = {"options": options, "content": digest(content), "style": [digest(s) for s in styles]}
    out: dict[str, Any] = json.loads(json.dumps(body))  # tuples as lists, keys as text: as read back
    return out


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The settings that differ, as ``name=saved (now now)`` (images: ``the content image``)."""
    out = []
    if saved.get("content") != now.get("content"):
        out.append("the content image")
    if saved.get("style") != now.get("style"):
        out.append("the style image" + ("s" if len(now.get("style") or ()) > 1 else ""))
    old, new = saved.get("options") or {}, now.get("options") or {}
    for name in [n for n in Options.names() if n in old or n in new]:
        if old.get(name) != new.get(name):
            out.append(f"{name}={_text(old.get(name))} (now {_text(new.get(name))})")
    return out


def _text(value: Any) -> str:
    if value is None:
        return "auto"
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    return str(value)


def check(saved: Pastiche, now: dict[str, Any], where: str = "the saved pastiche") -> None:
    """Raise :class:`OptionError` naming each differing setting unless ``saved`` was made with
    the settings ``now`` (:func:`run_settings`). A pastiche without recorded settings is not compared."""
    if not saved.settings:
        return
    diff = differences(saved.settings, now)
    if diff:
        raise OptionError(
            f"cannot resume {where}: it was made with other settings: {'; '.join(diff)}. Use the settings and "
            "images it was made with, or start afresh (leave out resume)"
        )


# ----------------------------------------------------------------------------- the record beside an output


def sidecar_path(out: str | os.PathLike[str]) -> Path:
    """``OUT.nst.json``."""
    p = Path(out).expanduser()
    return p.with_name(p.name + SIDECAR)


def from_record(rec: Any, settings: dict[str, Any] | None = None) -> Pastiche:
    """The pastiche a progress record with an image carries (its image is its step's, evaluated)."""
    assert rec.image is not None
    return Pastiche(
        image=rec.image,
        step=int(rec.step),
        total=int(rec.total),
        losses=dict(rec.losses),
        level=int(rec.level),
        levels=int(rec.levels),
        shape=(int(rec.image.shape[0]), int(rec.image.shape[1])),
        size=int(rec.size),
        frame=int(getattr(rec, "frame", 0)),
        frames=int(getattr(rec, "frames", 1)),
        settings=dict(settings or {}),
    )


def _state_path(out: Path, step: int) -> Path:
    return out.with_name(f"{out.name}.nst-{int(step):08d}.npz")


def _states(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{_glob_escape(out.name)}.nst-*.npz"))


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def save(out: str | os.PathLike[str], pastiche: Pastiche) -> None:
    """Write ``pastiche`` to ``out`` (an image file) with its record beside it, each atomically:
    the full-precision state, then the JSON naming it (enough to resume, should the process be
    killed while the image is written), then the image (a PNG quickly compressed); older states go."""
    from napari_nst.core.image.files import write_image

    p = Path(out).expanduser()
    state = _state_path(p, pastiche.step)
    tmp = state.with_name(f".{state.name}.part")
    try:
        image = np.ascontiguousarray(pastiche.image, dtype=np.float32)
        with open(tmp, "wb") as fh:
            if pastiche.state is None:
                np.savez(fh, image=image)
            else:
                np.savez(fh, image=image, state=np.ascontiguousarray(pastiche.state, dtype=np.float32))
        os.replace(tmp, state)
    finally:
        if tmp.exists():
            tmp.unlink()
    body = {
        "napari_nst_run": VERSION,
        "output": p.name,
        "step": int(pastiche.step),
        "total": int(pastiche.total),
        "complete": pastiche.complete,
        "level": int(pastiche.level),
        "levels": int(pastiche.levels),
        "shape": [int(n) for n in pastiche.shape],
        "size": int(pastiche.size),
        "losses": {k: float(v) for k, v in pastiche.losses.items()},
        "state": state.name,
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": pastiche.settings,
    }
    _write_json(sidecar_path(p), body)
    for old in _states(p):
        if old != state:
            old.unlink(missing_ok=True)
    write_image(p, pastiche.image, quick=True)


def _write_json(path: Path, body: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.part")
    try:
        tmp.write_text(json.dumps(body, indent=1, allow_nan=False) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def saved_step(out: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(step, total) of the interrupted run recorded beside ``out``, or None (no readable record)."""
    try:
        body = json.loads(sidecar_path(out).read_text())
        return int(body["step"]), int(body["total"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load(out: str | os.PathLike[str]) -> Pastiche:
    """The interrupted run recorded beside ``out`` (raises :class:`OptionError` saying why not)."""
    p = Path(out).expanduser()
    side = sidecar_path(p)
    if not side.is_file():
        raise OptionError(
            f"cannot resume {str(p)!r}: there is no record of an interrupted run beside it ({side.name}): "
            "the run finished, or stopped before its first evaluation; start afresh (leave out resume)"
        )
    try:
        body = json.loads(side.read_text())
        state = p.with_name(str(body["state"]))
        with np.load(state, allow_pickle=False) as arrays:
            image = np.asarray(arrays["image"], dtype=np.float32)
            network = np.asarray(arrays["state"], dtype=np.float32) if "state" in arrays.files else None
        saved = Pastiche(
            image=image,
            state=network,
            step=int(body["step"]),
            total=int(body["total"]),
            losses={str(k): float(v) for k, v in body.get("losses", {}).items()},
            level=int(body.get("level", 1)),
            levels=int(body.get("levels", 1)),
            shape=(int(body["shape"][0]), int(body["shape"][1])),
            size=int(body.get("size", 0)),
            settings=dict(body.get("settings") or {}),
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise OptionError(
            f"cannot resume {str(p)!r}: its record {side.name} or the state it names is unreadable ({exc}); "
            "start afresh (leave out resume)"
        ) from None
    if saved.image.ndim != 3 or tuple(saved.image.shape[:2]) != saved.shape:
        raise OptionError(
            f"cannot resume {str(p)!r}: its state {state.name} holds shape {saved.image.shape}, not the "
            f"{saved.shape} its record says; start afresh (leave out resume)"
        )
    return saved


def clear(out: str | os.PathLike[str]) -> None:
    """Remove the record beside ``out`` (its run finished: nothing is left to resume)."""
    p = Path(out).expanduser()
    sidecar_path(p).unlink(missing_ok=True)
    for state in _states(p):
        state.unlink(missing_ok=True)
