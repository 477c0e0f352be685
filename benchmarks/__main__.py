"""``python -m benchmarks --list | NAME [options] | report [options]``."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from types import ModuleType
from typing import Any

from . import BENCHMARKS
from . import _harness as H

USAGE = """usage: python -m benchmarks --list
       python -m benchmarks NAME [options]     (python -m benchmarks NAME --help)
       python -m benchmarks report [--results-dir DIR] [--out docs/benchmarks.md]
       python -m benchmarks gpu-pack [--weights W]  (the files a GPU machine's call reads, and the call)"""


def _module(name: str) -> ModuleType:
    if name not in BENCHMARKS:
        raise H.BenchmarkError(f"no benchmark {name!r}; the benchmarks are: {', '.join(BENCHMARKS)} (--list)")
    return importlib.import_module(BENCHMARKS[name])


def _summary(mod: ModuleType) -> str:
    return (mod.__doc__ or "").strip().splitlines()[0]


def list_benchmarks() -> str:
    width = max(map(len, BENCHMARKS))
    lines = [f"{name:{width}}  {_summary(_module(name))}" for name in BENCHMARKS]
    lines.append(f"{'report':{width}}  writes docs/benchmarks.md from benchmarks/results/*.json")
    return "\n".join(lines)


def parser(name: str, mod: ModuleType) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=f"python -m benchmarks {name}",
        description=(mod.__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mod.add_arguments(ap)
    H.add_common_arguments(ap)
    return ap


def parse(name: str, argv: list[str]) -> argparse.Namespace:
    """The arguments of benchmark ``name`` with the harness's defaults resolved."""
    args = parser(name, _module(name)).parse_args(argv)
    H.resolve_common(args)
    return args


def run_benchmark(name: str, argv: list[str]) -> dict[str, Any]:
    """Run benchmark ``name`` in this process and record it; returns the run as written."""
    mod = _module(name)
    args = parse(name, argv)
    threads = None
    if getattr(mod, "USES_TORCH", True) and args.threads:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(args.threads)
    results_dir = args.results_dir or (None if args.dry_run else H.RESULTS)
    rec = H.Recorder(name, argv, args, results_dir)
    args._checkpoint = rec.checkpoint  # a benchmark may save after each part
    inline = H.INLINE_CHILDREN["on"]
    H.INLINE_CHILDREN["on"] = args.dry_run
    try:
        result = mod.run(args)
        rec.checkpoint(result, final=True)
    finally:
        H.INLINE_CHILDREN["on"] = inline
        if threads is not None:  # as it was (a test runs benchmarks in its own process)
            import torch

            torch.set_num_threads(threads)
    return rec.run


def _print_figures(run: dict[str, Any]) -> None:
    for f in run["figures"]:
        ratio = "" if f.get("ratio") is None else f"{f['ratio']:.3g}x {f['against']}"
        value = "" if f.get("value") is None else f"{f['value']:.4g} {f.get('unit', '')}".strip()
        print(f"{f['name']}: " + ", ".join(x for x in (ratio, value) if x))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["_child"]:
            return H.child_main(argv[1], argv[2])
        if not argv or argv[0] in ("-h", "--help"):
            print(USAGE)
            return 0 if argv else 2
        if argv[0] == "--list":
            print(list_benchmarks())
            return 0
        if argv[0] == "report":
            from . import report

            return report.main(argv[1:])
        if argv[0] == "gpu-pack":
            from . import gpu

            return gpu.pack_main(argv[1:])
        name, rest = argv[0], argv[1:]
        args = parse(name, rest)
        if args.isa == "avx2" and any(os.environ.get(k) != v for k, v in H.AVX2_ENV.items()):
            # the variables must be there before torch loads: the same command again, with them
            cmd = [sys.executable, "-m", "benchmarks", *argv]
            return subprocess.run(cmd, cwd=H.ROOT, env=H.child_env(H.AVX2_ENV)).returncode
        run = run_benchmark(name, rest)
        _print_figures(run)
        return 0
    except H.BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
