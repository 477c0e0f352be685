"""mkdocs hooks: the command-line and option references, generated from the code at build time.

A page that holds the line ``<!-- napari-nst: cli -->`` gets every subcommand of
``napari_nst.cli.build_parser()`` (usage, description, arguments); ``<!-- napari-nst: options -->``
gets the table of every option from ``napari_nst.core.options.specs()``. So these pages always
say what the installed code does. Registered in mkdocs.yml (``hooks:``); the render functions
need no mkdocs and are tested by tests/headless/test_docs_reference.py.
"""

from __future__ import annotations

import argparse
import functools
import html
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI_MARKER = "<!-- napari-nst: cli -->"
OPTIONS_MARKER = "<!-- napari-nst: options -->"
USAGE_WIDTH = 88
#: the group every engine option's flag is in (napari_nst.cli.add_option_flags); shown once
SHARED_GROUP = "style-transfer options"
#: options that the widget sets from something other than a form field
WIDGET_ELSEWHERE = {
    "content_limits": "the content layer's contrast limits",
    "style_limits": "the style layer's contrast limits",
    "style_blend": "Styles: each row's weight",
    "regions": "Regions (a Labels layer)",
    "region_styles": "Region styles: a row per label",
    "style_regions": "Style regions: parts of style k",
    "mask": "Restyle only (a Labels or Shapes layer)",
}


def _import_source() -> None:
    """Document the source tree next to this file, not whatever napari_nst is installed."""
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)


def _md(text: str) -> str:
    """Plain help text -> Markdown that shows it as written (table cells included)."""
    text = html.escape(" ".join(str(text).split()), quote=False)
    return re.sub(r"([\\`*_|\[\]])", r"\\\1", text)


def _code(text: str) -> str:
    """Inline code in a table cell (a | would end the cell)."""
    return "<code>" + html.escape(text).replace("|", "&#124;") + "</code>"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_of(parser: argparse.ArgumentParser, name: str) -> str:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name:
                    return choice.help or ""
    return ""


def _group_rows(parser: argparse.ArgumentParser, group: Any) -> list[str]:
    formatter = parser._get_formatter()
    rows = []
    for action in group._group_actions:
        if action.help == argparse.SUPPRESS:
            continue
        invocation = formatter._format_action_invocation(action)
        text = formatter._expand_help(action) if action.help else ""
        if action.required and action.option_strings:
            text = "Required. " + text
        rows.append(f"| {_code(invocation)} | {_md(text)} |")
    return rows


def _group_title(group: Any) -> str:
    return {"positional arguments": "Arguments", "options": "Options", "optional arguments": "Options"}.get(
        group.title, group.title[:1].upper() + group.title[1:]
    )


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def render_cli() -> str:
    """Every subcommand of ``napari-nst``: what it does, its usage and its arguments (Markdown)."""
    _import_source()
    from napari_nst.cli import build_parser

    parser = build_parser()
    out: list[str] = []
    shared: tuple[argparse.ArgumentParser, Any] | None = None
    for name, sub in _subparsers(parser).items():
        sub.formatter_class = functools.partial(argparse.HelpFormatter, width=USAGE_WIDTH)
        out += [f"## `napari-nst {name}` {{ #{_anchor(name)} }}", ""]
        summary = _help_of(parser, name)
        if sub.description or summary:
            out += [_md(sub.description or summary), ""]
        out += ["```text", sub.format_usage().strip(), "```", ""]
        for group in sub._action_groups:
            if not [a for a in group._group_actions if a.help != argparse.SUPPRESS]:
                continue
            if group.title.startswith(SHARED_GROUP):
                if shared is None or len(group._group_actions) > len(shared[1]._group_actions):
                    shared = (sub, group)  # the fullest: stylize-stack's has the stack-only flags too
                out += [
                    f"and every [style-transfer option](#{_anchor(SHARED_GROUP)}) "
                    "(`--size`, `--steps`, `--style-weight`, ...).",
                    "",
                ]
                continue
            out += [f"**{_group_title(group)}**", "", "| argument | meaning |", "| --- | --- |"]
            out += _group_rows(sub, group) + [""]
    if shared is not None:
        sub, group = shared
        out += [
            f"## Style-transfer options {{ #{_anchor(SHARED_GROUP)} }}",
            "",
            "`stylize`, `stylize-stack` and `batch` take one flag per engine option; a flag left out keeps "
            "the option's default. Lists are comma-separated (`--style-layers relu1_1,relu2_1`), and `auto` "
            "or an empty value means None (`--seed none`: random). The [Options](options.md) page has the "
            "same options with their Python names.",
            "",
            "| flag | meaning |",
            "| --- | --- |",
        ]
        out += _group_rows(sub, group) + [""]
    return "\n".join(out)


def render_options() -> str:
    """Every option: a table (keyword, flag, widget field, default, first sentence), then each in full."""
    _import_source()
    from napari_nst.core.options import specs
    from napari_nst.core.spec import first_sentence

    rows = ["| option | command line | widget | default | meaning |", "| --- | --- | --- | --- | --- |"]
    details = ["## Every option in full", ""]
    for sp in specs():
        flag = _code(sp.flag) if sp.cli else "-"
        if not sp.form:
            widget = _md(WIDGET_ELSEWHERE.get(sp.name, "-"))
        else:
            widget = _md(sp.label) + (" (Advanced)" if sp.advanced else "")
        rows.append(
            f"| [`{sp.name}`](#{_anchor(sp.name)}) | {flag} | {widget} | {_md(sp.default_text)} | "
            f"{_md(first_sentence(sp.help))} |"
        )
        facts = [f"default: {_md(sp.default_text)}"]
        if sp.choices:
            facts.append("choices: " + ", ".join(f"`{c}`" for c in sp.choices))
        if sp.lo is not None or sp.hi is not None:
            lo = "" if sp.lo is None else f"{sp.lo:g}"
            hi = "" if sp.hi is None else f"{sp.hi:g}"
            facts.append(f"range: {lo} to {hi}" if lo and hi else (f"at least {lo}" if lo else f"at most {hi}"))
        facts.append(f"command line: `{sp.flag}`" if sp.cli else "not on the command line")
        details += [
            f"### `{sp.name}` {{ #{_anchor(sp.name)} }}",
            "",
            _md(sp.help),
            "",
            "*" + "; ".join(facts) + "*",
            "",
        ]
    return "\n".join(rows + [""] + details)


#: Sphinx cross-reference roles in docstrings (":func:`stylize`", ":class:`~a.b.C`"), which
#: mkdocstrings shows as text: rendered as code (":func:<code>stylize</code>") or left raw in a type
_ROLES = r":(?:func|meth|class|mod|attr|data|exc|obj):"
SPHINX_ROLE_CODE = re.compile(_ROLES + r"<code>~?")
SPHINX_ROLE_RAW = re.compile(_ROLES + r"`~?([^`<]+)`")


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs: put the generated references in place of their markers."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, render_cli())
    if OPTIONS_MARKER in markdown:
        markdown = markdown.replace(OPTIONS_MARKER, render_options())
    return markdown


def on_page_content(html: str, **_: Any) -> str:
    """mkdocs: drop Sphinx roles in front of rendered docstring code (the name alone stays)."""
    return SPHINX_ROLE_RAW.sub(r"\1", SPHINX_ROLE_CODE.sub("<code>", html))
