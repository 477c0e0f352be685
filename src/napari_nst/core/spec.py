"""Option metadata: how each :class:`~napari_nst.core.options.Options` field is shown, parsed and bounded.

Every option is declared once, as a dataclass field of ``Options`` made with :func:`option`. The
command line's flags, the widget's form and the documentation's option table are generated from
:func:`napari_nst.core.options.specs` (no torch, no Qt here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from napari_nst.core.errors import OptionError

#: the kinds of value an option can hold (what the form shows and how text is parsed)
KINDS = (
    "int",
    "float",
    "auto_float",
    "names",
    "floats",
    "choice",
    "path",
    "init",
    "seed",
    "limits",
    "device",
    "log_float",
    "regions",
    "mapping",
    "bytes",
    "scales",
    "style_regions",
    "mask",
)

_NONE_WORDS = ("", "auto", "none", "default")


def option(
    default: Any,
    *,
    label: str,
    kind: str,
    lo: float | None = None,
    hi: float | None = None,
    step: float | None = None,
    choices: tuple[str, ...] | None = None,
    none: str = "",
    advanced: bool = False,
    form: bool = True,
    cli: bool = True,
) -> Any:
    """A dataclass field of ``Options`` with its metadata.

    ``none``: what the value None means, in words ("automatic", "random" ...); empty when None is
    not allowed. ``form`` / ``cli``: whether the widget's form / the command line offer it.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown option kind {kind!r}")
    meta = dict(
        label=label,
        kind=kind,
        lo=lo,
        hi=hi,
        step=step,
        choices=choices,
        none=none,
        advanced=advanced,
        form=form,
        cli=cli,
    )
    return field(default=default, metadata={"napari_nst": meta})


@dataclass(frozen=True)
class Spec:
    """One option: its name, default, help text (from the ``Options`` docstring) and metadata."""

    name: str
    default: Any
    help: str
    label: str
    kind: str
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    none: str = ""
    advanced: bool = False
    form: bool = True
    cli: bool = True

    @property
    def nullable(self) -> bool:
        """Whether None is a value (its meaning is :attr:`none`)."""
        return bool(self.none)

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--style-weight``."""
        return "--" + self.name.replace("_", "-")

    @property
    def default_text(self) -> str:
        """The default in words, for help texts and the documentation ("256 on a CPU, 512 on a GPU", "0.0")."""
        return self.none if self.default is None else self.format(self.default)

    def parse(self, text: str) -> Any:
        """Text from a line edit or the command line -> value (validated later by ``Options``).

        Empty, ``auto`` or ``none`` give None where None is allowed. Raises :class:`OptionError`.
        """
        t = str(text).strip()
        if self.nullable and (t.lower() in _NONE_WORDS or t.lower() == self.none.lower()):
            return None
        try:
            return _PARSERS.get(self.kind, str)(t)
        except (TypeError, ValueError):
            raise OptionError(f"{self.name}: {t!r} is not {_WHAT[self.kind]}{self._none_hint()}") from None

    def format(self, value: Any) -> str:
        """Value -> text that :meth:`parse` reads back ("" for None)."""
        if value is None:
            return ""
        if self.kind == "mapping":
            from napari_nst.core.objective.regions import format_mapping

            return format_mapping(value)
        if isinstance(value, (tuple, list)):
            return ", ".join(_fmt_scalar(v) for v in value)
        return _fmt_scalar(value)

    def _none_hint(self) -> str:
        return f", or leave it empty for {self.none}" if self.nullable else ""


def _fmt_scalar(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _number(t: str) -> float:
    return float(t)


def _integer(t: str) -> int:
    f = float(t)
    if not f.is_integer():
        raise ValueError(t)
    return int(f)


def _words(t: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in t.split(",") if s.strip())


def _numbers(t: str) -> tuple[float, ...]:
    return tuple(float(s) for s in _words(t))


def _limits(t: str) -> tuple[float, float]:
    vals = _numbers(t)
    if len(vals) != 2:
        raise ValueError(t)
    return vals[0], vals[1]


def _scales(t: str) -> float | tuple[float, ...]:
    """``"1"`` -> 1.0 (every style), ``"1, 0.5"`` -> (1.0, 0.5) (one per style)."""
    vals = _numbers(t)
    if not vals:
        raise ValueError(t)
    return vals[0] if len(vals) == 1 and "," not in t else vals


def _files(t: str) -> list[str | None]:
    """``"a.png,none"`` -> ``["a.png", None]``: a label image file per style image (none: whole)."""
    out = [None if w.lower() in ("none", "-") else w for w in _words(t)]
    if not out:
        raise ValueError(t)
    return out


def _mapping(t: str) -> Any:
    from napari_nst.core.objective.regions import parse_mapping

    return parse_mapping(t)


def _bytes(t: str) -> int:
    from napari_nst.core.compute.memory import parse_bytes

    return parse_bytes(t)


_PARSERS = {
    "int": _integer,
    "seed": _integer,
    "float": _number,
    "auto_float": _number,
    "names": _words,
    "floats": _numbers,
    "limits": _limits,
    "log_float": _number,
    "mapping": _mapping,
    "bytes": _bytes,
    "scales": _scales,
    "style_regions": _files,
}
_WHAT = {
    "int": "a whole number",
    "seed": "a whole number",
    "float": "a number (e.g. 0.5 or 1e-3)",
    "auto_float": "a number (e.g. 1e5)",
    "names": "a comma-separated list of layer names",
    "floats": "a comma-separated list of numbers",
    "limits": "two numbers 'lo, hi'",
    "choice": "a valid choice",
    "path": "a file path",
    "init": "content, noise or an image",
    "device": "a device name",
    "log_float": "a number (e.g. 0.5 or 2)",
    "regions": "a label image file",
    "mapping": "a list 'label:style,...' like '1:0,2:none'",
    "bytes": "an amount of memory like '8GB', '512MiB' or 2000000000",
    "scales": "a number, or one per style image separated by commas (e.g. 1 or 1,0.5)",
    "style_regions": "label image files, one per style image, separated by commas (none: the whole image)",
    "mask": "a mask image file (nonzero = restyle)",
}


def docstring_help(doc: str) -> dict[str, str]:
    """``{name: description}`` from a numpy docstring's Attributes section (one paragraph each)."""
    m = re.search(r"Attributes\n\s*-+\n(.*)", doc or "", re.S)
    if not m:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    text: list[str] = []
    for line in m.group(1).splitlines():
        if not line.strip():
            continue
        head = re.match(r"^([a-z_][a-z0-9_]*(?:, [a-z_][a-z0-9_]*)*) : (.*)$", line.strip())
        if head and len(line) - len(line.lstrip()) <= 4:
            out.update({n: " ".join(" ".join(text).split()) for n in names})
            names, text = head.group(1).split(", "), []
        else:
            text.append(line.strip().replace("``", ""))
    out.update({n: " ".join(" ".join(text).split()) for n in names})
    return out


def first_sentence(text: str) -> str:
    """The first sentence of a help text (the documentation's option table keeps the rest out)."""
    m = re.match(r"(.+?\.)(\s|$)", text)
    return m.group(1) if m else text
