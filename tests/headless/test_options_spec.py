"""Options are declared once: the CLI, the documentation's table and validation all follow the metadata."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from napari_nst.cli import build_parser, main
from napari_nst.core.errors import OptionError
from napari_nst.core.options import STACK_OPTIONS, Options, spec, specs


def _stylize_parser(command="stylize"):
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices[command]


def test_every_field_has_a_spec():
    names = [f.name for f in fields(Options)]
    assert [sp.name for sp in specs()] == names == Options.names()
    assert all(sp.help and sp.label for sp in specs()), [sp.name for sp in specs() if not sp.help]


@pytest.mark.parametrize("command", ["stylize", "stylize-stack"])
def test_every_cli_option_is_a_flag_and_no_flag_is_handwritten(command):
    parser = _stylize_parser(command)
    wanted = {sp.name for sp in specs() if sp.cli and (command == "stylize-stack" or sp.name not in STACK_OPTIONS)}
    dests = {a.dest: a for a in parser._actions}
    for sp in specs():
        if sp.name in wanted:
            assert sp.name in dests, f"{sp.flag} missing from `napari-nst {command}`"
            assert sp.flag in dests[sp.name].option_strings
    engine_flags = {a.dest for a in parser._actions if a.dest in Options.names()}
    assert engine_flags == wanted


def test_stack_only_options_say_so():
    assert all(spec(name).help.startswith("Stacks only") for name in STACK_OPTIONS)


@pytest.mark.parametrize("sp", specs(), ids=lambda sp: sp.name)
def test_default_text_round_trips(sp):
    if sp.default is None:
        assert sp.parse("") is None and sp.parse("auto") is None
    elif sp.kind not in ("init",):
        assert sp.parse(sp.format(sp.default)) == sp.default


@pytest.mark.parametrize("sp", [sp for sp in specs() if sp.lo is not None], ids=lambda sp: sp.name)
def test_bounds_are_enforced_where_declared(sp):
    integer = sp.kind in ("int", "seed")
    below = sp.lo - 1 if integer else sp.lo - 1e-3
    with pytest.raises(OptionError, match=sp.name):
        Options.from_kwargs(**{sp.name: (int(below) if integer else below) if sp.kind != "floats" else (below,)})
    if sp.hi is not None:
        above = sp.hi + 1 if integer else sp.hi * 1.01
        with pytest.raises(OptionError, match=f"lower {sp.name}"):
            Options.from_kwargs(**{sp.name: int(above) if integer else above})


def test_text_parsing():
    assert spec("style_layer_weights").parse("1, 2.5") == (1.0, 2.5)
    assert spec("style_layers").parse("relu1_1,relu2_1") == ("relu1_1", "relu2_1")
    assert spec("seed").parse("random") is None and spec("seed").parse("7") == 7
    assert spec("content_limits").parse("0, 4095") == (0.0, 4095.0)
    with pytest.raises(OptionError, match="style_weight: 'lots' is not a number.*empty for automatic"):
        spec("style_weight").parse("lots")
    with pytest.raises(OptionError, match="steps"):
        spec("steps").parse("2.5")


def test_size_and_steps_by_device():
    o = Options.from_kwargs()
    assert o.size is None and o.steps is None
    cpu, gpu = o.for_device(gpu=False), o.for_device(gpu=True)
    assert (cpu.size, cpu.steps) == (256, 100) and (gpu.size, gpu.steps) == (512, 300)
    assert Options.from_kwargs(size=300).for_device(gpu=True).size == 300


def test_cli_suggests_the_flag_meant(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["stylize", "a.png", "b.png", "-o", "c.png", "--stpes", "10"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "napari-nst stylize" in err.splitlines()[0]  # the subcommand's usage, not the top level's
    assert "did you mean '--steps'" in err


def test_cli_bad_value_names_the_option(capsys):
    with pytest.raises(SystemExit):
        main(["stylize", "a.png", "b.png", "-o", "c.png", "--style-weight", "lots"])
    assert "style_weight: 'lots' is not a number" in capsys.readouterr().err


def test_cli_help_has_no_none_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["stylize", "--help"])
    out = capsys.readouterr().out
    assert "(default: None)" not in out and "--style-layer-weights" in out
    assert "--seed" in out and "--content-limits" in out


def test_cli_passes_only_given_options():
    from napari_nst.cli import _options

    args = _stylize_parser().parse_args(["c.png", "s.png", "-o", "o.png", "--seed", "none", "--tv-weight", "0.5"])
    opts = _options(args)
    assert opts["seed"] is None and opts["tv_weight"] == 0.5 and "size" not in opts
    Options.from_kwargs(**opts)  # valid as a whole


def test_init_array_is_kept():
    arr = np.zeros((8, 8, 3), np.float32)
    assert Options.from_kwargs(init=arr).init is arr
