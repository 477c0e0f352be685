"""napari-nst's benchmarks: ``python -m benchmarks --list``, ``python -m benchmarks NAME [options]``,
``python -m benchmarks report`` (run from the repository root). See benchmarks/README.md."""

#: name on the command line -> module; each module has ``add_arguments(parser)`` and ``run(args) -> dict``
BENCHMARKS = {
    "cpu": "benchmarks.cpu",
    "gpu": "benchmarks.gpu",
    "tiles": "benchmarks.tiles",
    "stack": "benchmarks.stack",
    "batch": "benchmarks.batch",
    "controls": "benchmarks.controls",
    "strength": "benchmarks.strength",
    "quality": "benchmarks.quality",
    "memory_growth": "benchmarks.memory_growth",
    "stop_latency": "benchmarks.stop_latency",
    "live_update": "benchmarks.live_update",
    "widget_input": "benchmarks.widget_input",
    "responsiveness": "benchmarks.responsiveness",
}
