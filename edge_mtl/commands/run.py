"""`edge-mtl run`: the command line turned into RunOptions for the daemon (edge_mtl.daemon.service)."""

from __future__ import annotations

import argparse

from edge_mtl.daemon.service import RunOptions


def run_options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        sources=tuple(args.source or ()),
        camera_names=tuple(args.camera or ()),
        loop=bool(args.loop),
        realtime=bool(args.realtime),
        events=args.events,
        jsonl=args.jsonl,
        gallery=args.gallery,
        max_frames=args.max_frames,
        print_events=bool(args.print_events),
        annotate=args.annotate,
        log_level_given=getattr(args, "log_level", None) is not None,
    )
