"""``batch.json``: one entry per item of a batch, rewritten atomically after every finished item.

It is how ``--resume`` knows an output is complete: an entry whose status is ``done`` and whose
file still has the recorded size and SHA-256. A batch.json made with other options or another
style is refused for ``--resume`` (the skipped outputs would not match the rest).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_nst.core.options import Options

MANIFEST = "batch.json"
VERSION = 1
#: options that do not change the pastiche (so a resume may change them)
_NOT_FINGERPRINTED = ("preview_every", "preview_interval", "device")


@dataclass
class ItemResult:
    """One item of a batch: its content, output and what happened to it.

    ``status``: ``done``, ``failed`` (``error`` says why), ``interrupted`` (stopped by Ctrl-C or
    SIGTERM while it was made here: ``output`` holds its pastiche of evaluation ``step`` of
    ``total``, with the record ``--resume`` continues it from), or ``pending`` (not started, or
    stopped on a cluster; ``--resume`` runs it). ``worker``: the dask worker's address, or ``local``.
    ``weights``: the resolved ``a`` (content) and ``b`` (style) weights; ``weights_file`` and
    ``model``: the network used. ``image``: the pastiche (float32 (H, W, 3) in [0, 1]) when the
    batch has no output folder, else None (it is in ``output``). ``skipped``: done by an earlier
    run and kept (``resume``).
    """

    content: str
    output: str | None = None
    status: str = "pending"
    error: str = ""
    worker: str = ""
    seconds: float = 0.0
    weights: dict[str, float] = field(default_factory=dict)
    losses: dict[str, float] = field(default_factory=dict)
    model: str = ""
    weights_file: str = ""
    device: str = ""
    bytes: int = 0
    sha256: str = ""
    step: int = 0
    total: int = 0
    skipped: bool = False
    image: np.ndarray | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("image")
        d.pop("skipped")
        return d


def file_digest(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(size in bytes, SHA-256 hex) of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return os.path.getsize(path), h.hexdigest()


def fingerprint(opts: Options, style_digest: str, fmt: str) -> dict[str, Any]:
    """What must match for ``--resume`` to keep earlier outputs: options, style, format."""
    d = {k: v for k, v in opts.as_dict().items() if k not in _NOT_FINGERPRINTED}
    out: dict[str, Any] = json.loads(json.dumps({"style_sha256": style_digest, "format": fmt, "options": d}))
    return out


class Manifest:
    """The batch.json of an output folder."""

    def __init__(self, folder: Path, header: dict[str, Any], items: list[ItemResult]) -> None:
        self.path = folder / MANIFEST
        self.header = header
        self.items = items

    def write(self) -> None:
        """Atomically (temporary file, then rename): an interrupted write keeps the last good file."""
        body = {"napari_nst_batch": VERSION, **self.header, "items": [it.to_json() for it in self.items]}
        tmp = self.path.with_name(f".{self.path.name}.part")
        tmp.write_text(json.dumps(body, indent=1, allow_nan=False) + "\n")
        os.replace(tmp, self.path)

    def done_earlier(self, resume: bool) -> dict[str, dict[str, Any]]:
        """Entries of an earlier run in this folder that ``resume`` keeps, by output file name.

        Raises ValueError if that run used other options, another style or format.
        """
        if not resume or not self.path.exists():
            return {}
        try:
            old = json.loads(self.path.read_text())
            entries = {Path(e["output"]).name: e for e in old["items"] if e.get("status") == "done" and e.get("output")}
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"cannot resume: {str(self.path)!r} is not a napari-nst batch.json ({exc}); "
                "remove it or choose another output folder"
            ) from None
        changed = [
            k
            for k in sorted(set(self.header) | set(old))
            if k != "items" and k != "napari_nst_batch" and k != "style" and old.get(k) != self.header.get(k)
        ]
        if "options" in changed:
            opts = old.get("options") or {}
            changed = [k for k in changed if k != "options"] + sorted(
                k for k in set(opts) | set(self.header["options"]) if opts.get(k) != self.header["options"].get(k)
            )
        if changed:
            raise ValueError(
                f"cannot resume: {str(self.path)!r} was made with other settings (differs in: "
                f"{', '.join(changed)}); use the same settings, or another output folder, "
                "or drop --resume"
            )
        return {name: e for name, e in entries.items() if _complete(e, self.path.parent / name)}

    def interrupted_earlier(self, resume: bool) -> list[str]:
        """Output file names of the items an earlier run here left ``interrupted`` (call after
        :meth:`done_earlier`, which checks that run's settings)."""
        if not resume or not self.path.exists():
            return []
        try:
            items = json.loads(self.path.read_text())["items"]
            return [Path(e["output"]).name for e in items if e.get("status") == "interrupted" and e.get("output")]
        except (ValueError, KeyError, TypeError):
            return []


def _complete(entry: dict[str, Any], out: Path) -> bool:
    """The output file is there (in this folder, wherever it was made) with its recorded size and hash."""
    if not out.is_file():
        return False
    size, digest = file_digest(out)
    return size == entry.get("bytes") and digest == entry.get("sha256")


def from_entry(entry: dict[str, Any]) -> ItemResult:
    """An :class:`ItemResult` from a batch.json entry (one that ``resume`` keeps)."""
    known = set(ItemResult.__dataclass_fields__) - {"image", "skipped"}
    return ItemResult(**{k: v for k, v in entry.items() if k in known}, skipped=True)
