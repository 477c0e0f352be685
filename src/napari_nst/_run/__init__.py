"""What a run is, without Qt: inputs (layer snapshots), a plan of tasks, a runner that turns a task
into progress records, status texts, and a sink that shows the records (docs/architecture.md)."""
