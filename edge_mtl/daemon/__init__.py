"""The daemon around the pipeline: main loop, systemd notify and watchdog, SIGHUP reload, annotation, /metrics and
/health (docs/operations.md). Part of the runtime path: no torch, nothing from training, evaluation or export."""
