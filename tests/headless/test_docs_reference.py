"""The documentation's command-line and option references are generated from the code (docs/hooks.py).

The strict mkdocs build (.ci/run) fails on a hook that raises; these tests check what it renders:
every subcommand, flag and option, and the markers on the pages that the hook replaces.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

from napari_nst.cli import build_parser
from napari_nst.core.options import specs

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def hooks():
    spec = importlib.util.spec_from_file_location("napari_nst_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_cli_page_holds_the_generated_reference(hooks):
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert hooks.CLI_MARKER in page
    out = hooks.on_page_markdown(page)
    assert hooks.CLI_MARKER not in out
    # the flags each table row documents (the first cell: "-o OUTPUT, --output OUTPUT")
    cells = re.findall(r"^\| <code>(.*?)</code> \|", out, flags=re.MULTILINE)
    documented = {word.rstrip(",") for cell in cells for word in cell.split() if word.startswith("-")}
    for name, sub in _subparsers().items():
        assert f"## `napari-nst {name}`" in out
        assert f"usage: napari-nst {name}" in out
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in documented, f"{flag} of napari-nst {name} is missing from the CLI reference"


def test_every_option_is_in_the_options_page(hooks):
    page = (DOCS / "options.md").read_text(encoding="utf-8")
    assert hooks.OPTIONS_MARKER in page
    out = hooks.on_page_markdown(page)
    assert hooks.OPTIONS_MARKER not in out
    for sp in specs():
        assert f"[`{sp.name}`](#" in out, f"{sp.name} is missing from the options table"
        assert f"### `{sp.name}`" in out, f"{sp.name} has no section on the options page"
        if sp.cli:
            assert f"<code>{sp.flag}</code>" in out


def test_help_text_is_escaped_for_markdown_tables(hooks):
    assert hooks._md("a | b * c_d <e>") == r"a \| b \* c\_d &lt;e&gt;"
    assert hooks._code("--x A|B") == "<code>--x A&#124;B</code>"
