"""The `edge-mtl` command: a thin layer over library functions (docs/architecture.md, rule 2).

Exit codes: 0 ok, 2 bad input or config (one-line reason on stderr), 1 internal error. Heavy modules are imported
inside the handlers, so `edge-mtl --help` and the runtime commands never import torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_mtl import __version__
from edge_mtl.errors import EdgeMtlError, InputError

log = logging.getLogger("edge_mtl")


# ------------------------------------------------------------------ helpers
def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _int_at_least(text: str, low: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"expected at least {low}, got {v}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer of at least 0 (where 0 means 'all' or 'the default')."""
    return _int_at_least(text, 0)


def batch_list(text: str) -> list[int]:
    """argparse type: comma-separated recognizer batch sizes, each at least 1 (`1,8,32`)."""
    out = [positive_int(b.strip()) for b in text.split(",") if b.strip()]
    if not out:
        raise argparse.ArgumentTypeError("expected batch sizes such as 1,8,32")
    return out


PRECISIONS = ("fp32", "fp16", "int8")


def precision_list(text: str) -> list[str]:
    """argparse type: comma-separated precisions out of fp32, fp16 and int8 (`fp32,int8`)."""
    out = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in out if p not in PRECISIONS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(PRECISIONS)}, got {text!r}")
    return out


def _finish(errors: list[str]) -> int:
    """Images that could not be read were reported one line each as they came; the exit code says so."""
    if errors:
        sys.stderr.write(f"edge-mtl: error: {len(errors)} input(s) could not be read; first: {errors[0]}\n")
        return 2
    return 0


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["onnxruntime", "tensorrt", "torch"], default=None)
    p.add_argument("--device", choices=["cpu", "cuda", "tensorrt"], default=None)
    p.add_argument("--precision", choices=PRECISIONS, default=None)
    p.add_argument("--threads", type=non_negative_int, default=None, help="CPU threads for inference")


def _add_model_args(p: argparse.ArgumentParser, recognizer: bool = True) -> None:
    p.add_argument("--config", type=Path, help="edge-mtl.toml (models, backend, thresholds)")
    p.add_argument("--detector", type=Path, help="detector ONNX (default: shipped export/detector.onnx)")
    if recognizer:
        p.add_argument("--recognizer", type=Path, help="recognizer ONNX (default: export/recognizer.onnx)")
        p.add_argument("--flip", action="store_true",
                       help="test-time flip: also run each face mirrored (recognizer.flip; twice its cost)")
    p.add_argument("--input-size", type=positive_int, help="detector input long side in pixels")
    p.add_argument("--threshold", type=float, help="face score threshold")
    _add_backend_args(p)


def _app_config(args: argparse.Namespace) -> Any:
    """The config file (if any) with command-line overrides applied."""
    from pydantic import ValidationError

    from edge_mtl.config import AppConfig, load_config, override_error

    cfg = load_config(args.config) if getattr(args, "config", None) else AppConfig()
    try:
        return _apply_model_args(args, cfg)
    except ValidationError as e:
        raise override_error(e) from None


def _apply_model_args(args: argparse.Namespace, cfg: Any) -> Any:
    if getattr(args, "detector", None):
        cfg.detector.model = args.detector
    if getattr(args, "recognizer", None):
        cfg.recognizer.model = args.recognizer
    if getattr(args, "flip", False):
        cfg.recognizer.flip = True
    if getattr(args, "input_size", None):
        cfg.detector.input_size = args.input_size
    if getattr(args, "threshold", None) is not None:
        cfg.detector.score_threshold = args.threshold
    for section in (cfg.detector.backend, cfg.recognizer.backend):
        if getattr(args, "backend", None):
            section.type = args.backend
        if getattr(args, "device", None):
            section.device = args.device
        if getattr(args, "precision", None):
            section.precision = args.precision
        if getattr(args, "threads", None) is not None:
            section.threads = args.threads
    from edge_mtl.config import threshold_conflict

    problem = threshold_conflict(cfg)  # overrides may break what the file satisfied
    if problem:
        raise InputError(problem)
    return cfg


# ------------------------------------------------------------------ handlers
def cmd_check_config(args: argparse.Namespace) -> int:
    from edge_mtl.config import AppConfig, load_toml
    from edge_mtl.fleet.config import CollectorFile
    from edge_mtl.train.config import TrainConfig

    text = Path(args.file).read_text(encoding="utf-8") if Path(args.file).is_file() else ""
    model: Any = TrainConfig if "[task]" in text else CollectorFile if "[collector" in text else AppConfig
    cfg = load_toml(args.file, model)
    notes: list[str] = []
    if isinstance(cfg, AppConfig):
        from edge_mtl.daemon.preflight import check_run_config
        from edge_mtl.identity.aggregate import resolve_threshold
        from edge_mtl.runtime.registry import check_models

        rec = check_models(cfg).get("recognizer")
        check_run_config(cfg)  # what run checks before opening cameras and models
        if rec is not None:  # what the daemon would run with (it logs the same line at start and on reload)
            i = cfg.identity
            th, source = resolve_threshold(i.threshold, i.false_accept_rate, rec, cfg.recognizer.flip)
            notes.append(f"identity threshold {th:.3f} ({source})")
    sys.stderr.write(f"{args.file}: ok\n" + "".join(f"{args.file}: {n}\n" for n in notes))
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from edge_mtl.commands.analyze import detect_paths

    errors: list[str] = []
    for rec in detect_paths(args.paths, _app_config(args), errors):
        if args.json:
            _emit(rec)
        else:
            sys.stdout.write(f"{rec['image']}: {len(rec['faces'])} face(s)\n")
    return _finish(errors)


def cmd_analyze(args: argparse.Namespace) -> int:
    from edge_mtl.commands.analyze import analyze_paths

    errors: list[str] = []
    for rec in analyze_paths(args.paths, _app_config(args), with_embedding=not args.no_embedding, errors=errors):
        if args.json:
            _emit(rec)
        else:
            parts = [
                f"{f['gender']['label']} {f['age']['years']:.0f}y q={f['quality']:.2f}" for f in rec["faces"]
            ]
            sys.stdout.write(f"{rec['image']}: {len(rec['faces'])} face(s) {'; '.join(parts)}\n")
    return _finish(errors)


def cmd_run(args: argparse.Namespace) -> int:
    from edge_mtl.commands.run import run_options
    from edge_mtl.daemon.service import run_service

    # SIGHUP re-reads the config file with the same command-line overrides
    return run_service(run_options(args), _app_config(args), reload_config=lambda: _app_config(args))


def cmd_events(args: argparse.Namespace) -> int:
    from edge_mtl.events.tail import tail

    return tail(args.events, from_seq=args.from_seq, follow=args.follow, out=sys.stdout)


def cmd_enroll(args: argparse.Namespace) -> int:
    from edge_mtl.identity.enroll import enroll_images

    result = enroll_images(args.gallery, args.name, args.images, _app_config(args), replace=args.replace)
    _emit(result) if args.json else sys.stdout.write(
        f"enrolled {result['name']}: {result['images']} image(s), {result['total']} in gallery\n"
    )
    return 0


def cmd_gallery(args: argparse.Namespace) -> int:
    from edge_mtl.events.dbfaults import db_guard
    from edge_mtl.identity.gallery import Gallery

    if args.action == "publish":
        return _publish_gallery(args)
    if args.action == "reenroll":
        from edge_mtl.identity.enroll import reenroll

        res = reenroll(args.gallery, _app_config(args), [args.name] if args.name else [])
        if args.json:
            _emit(res)
        else:
            for n in res["reenrolled"]:
                sys.stdout.write(f"re-enrolled {n} with {res['model']}\n")
        if res["failed"]:
            first = next(iter(res["failed"].items()))
            raise InputError(f"gallery reenroll: {len(res['failed'])} of "
                             f"{len(res['failed']) + len(res['reenrolled'])} people not re-enrolled "
                             f"(enrol them again from new photos), first {first[0]}: {first[1]}")
        return 0
    with db_guard(args.gallery, "gallery"), Gallery(args.gallery, create=False) as g:
        if args.action == "list":
            for row in g.people():
                line = f"{row['name']}\t{row['embeddings']}\t{','.join(row['models'])}\n"
                _emit(row) if args.json else sys.stdout.write(line)
        else:
            if not args.name:
                raise InputError("gallery remove: name a person to remove")
            n = g.remove(args.name)
            if n == 0:
                raise InputError(f"gallery remove: no person named {args.name!r} in {args.gallery}")
            sys.stdout.write(f"removed {args.name} ({n} embedding(s))\n")
    return 0


def _publish_gallery(args: argparse.Namespace) -> int:
    """`gallery publish`: the broker, key and topic from --config's [fleet.gallery], overridden by the options."""
    from edge_mtl.config import BrokerConfig
    from edge_mtl.fleet.gallery import publish_gallery

    fg = _app_config(args).fleet.gallery
    broker = BrokerConfig.model_validate(fg.model_dump(include=set(BrokerConfig.model_fields))) if fg else None
    if args.broker:
        host, _, port = args.broker.rpartition(":") if ":" in args.broker else (args.broker, "", "1883")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise InputError(f"gallery publish: --broker {args.broker!r}: expected HOST or HOST:PORT")
        broker = (broker or BrokerConfig()).model_copy(update={"host": host, "port": int(port)})
    key_file = args.key_file or (fg.key_file if fg else None)
    if broker is None or key_file is None:
        raise InputError("gallery publish: name the broker and key (--broker, --key-file, or [fleet.gallery] in "
                         "--config)")
    topic = args.topic or (fg.topic if fg else "edge-mtl/gallery")
    res = publish_gallery(args.gallery, key_file, broker, topic, args.gallery_version, args.recognizer_version)
    _emit(res) if args.json else sys.stdout.write(
        f"published gallery version {res['version']}: {res['people']} people, recognizer {res['recognizer']}, "
        f"on {res['topic']}\n")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from edge_mtl.fleet.collect import collect
    from edge_mtl.fleet.config import load_collector_config

    f = load_collector_config(args.config)
    if args.log_level is None:
        logging.getLogger().setLevel(f.log_level)
    if args.import_files:
        from edge_mtl.fleet.backfill import import_events

        _emit(import_events(f.collector, args.import_files))
        return 0
    return collect(f.collector)


def cmd_eval(args: argparse.Namespace) -> int:
    from edge_mtl.commands.eval import eval_options
    from edge_mtl.eval import suites

    result = suites.run(eval_options(args), _app_config(args))
    if args.json:
        _emit(result)
    else:
        from edge_mtl.eval.report import format_report

        sys.stdout.write(format_report(result))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edge_mtl.commands.bench import bench_options
    from edge_mtl.eval.bench import bench, format_bench

    if args.cameras is not None:
        from edge_mtl.commands.bench_cameras import cameras_bench_options
        from edge_mtl.eval.cameras_bench import bench_cameras, format_cameras

        result = bench_cameras(cameras_bench_options(args), _app_config(args))
        _emit(result) if args.json else sys.stdout.write(format_cameras(result))
        return 0
    result = bench(bench_options(args), _app_config(args))
    if args.json:
        _emit(result)
    else:
        sys.stdout.write(format_bench(result))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from edge_mtl.train.loop.run import train

    metrics = train(args.config, resume=not args.no_resume, max_steps=args.max_steps)
    _emit(metrics)
    return 0


def cmd_average_checkpoints(args: argparse.Namespace) -> int:
    from edge_mtl.train.post.average import average_checkpoints

    _emit(average_checkpoints(args.checkpoints, args.output))
    return 0


def cmd_calibrate_quality(args: argparse.Namespace) -> int:
    from edge_mtl.train.post.calibrate_quality import calibrate_quality

    _emit(calibrate_quality(args.checkpoint, args.reference, args.crops, args.sources, args.output,
                            faces=args.faces, seed=args.seed))
    return 0


def cmd_score_cohort(args: argparse.Namespace) -> int:
    from edge_mtl.export_tools.score_cohort import write_score_cohort

    _emit(write_score_cohort(args.model, args.crops, source=args.source, people=args.people, top=args.top,
                             seed=args.seed, copy_from=args.copy_from, output=args.output))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from edge_mtl.export_tools.export import export_checkpoint

    _emit(export_checkpoint(args.checkpoint, args.output, version=args.version, check=not args.no_check,
                            compatible=args.compatible_with))
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from edge_mtl.commands.export import quantize_options
    from edge_mtl.export_tools.quantize import quantize_model

    _emit(quantize_model(quantize_options(args)))
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    from edge_mtl.commands.export import build_engine_command

    _emit(build_engine_command(args))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edge_mtl.commands.demo import demo

    return demo(args.out, args.frames)


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-mtl", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"edge-mtl {__version__}")
    p.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("check-config", help="validate a daemon or training config file")
    s.add_argument("file", type=Path)
    s.set_defaults(func=cmd_check_config)

    s = sub.add_parser("detect", help="detect faces in images or folders")
    s.add_argument("paths", nargs="+", type=Path)
    s.add_argument("--json", action="store_true", help="one JSON line per image")
    _add_model_args(s, recognizer=False)
    s.set_defaults(func=cmd_detect)

    s = sub.add_parser("analyze", help="detect, align and analyse faces (embedding, age, gender, quality)")
    s.add_argument("paths", nargs="+", type=Path)
    s.add_argument("--json", action="store_true", help="one JSON line per image")
    s.add_argument("--no-embedding", action="store_true", help="leave embeddings out of the output")
    _add_model_args(s)
    s.set_defaults(func=cmd_analyze)

    s = sub.add_parser("run", help="run the pipeline on a source (file, rtsp://, /dev/videoN) or the config")
    s.add_argument("--source", action="append", help="video source; repeat for several cameras")
    s.add_argument("--camera", action="append", help="camera name for each --source (default cam0, cam1...)")
    s.add_argument("--events", type=Path, help="SQLite event queue")
    s.add_argument("--jsonl", type=Path, help="JSONL events log")
    s.add_argument("--gallery", type=Path, help="SQLite gallery of enrolled people")
    s.add_argument("--max-frames", type=positive_int, help="stop after this many frames per source")
    s.add_argument("--annotate", type=Path, help="write an annotated video (boxes, ids, names, age, gender)")
    s.add_argument("--print-events", action="store_true", help="also print events to stdout as JSON lines")
    s.add_argument("--loop", action="store_true", help="loop file sources")
    s.add_argument("--realtime", action="store_true", help="pace file sources at their native frame rate")
    _add_model_args(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("collect", help="store the events of many boxes from an MQTT broker in PostgreSQL")
    s.add_argument("--config", type=Path, required=True, help="collector.toml ([collector] section)")
    s.add_argument("--import", dest="import_files", type=Path, nargs="+", metavar="FILE",
                   help="instead of running: store the events of these files (a box's events.db queue or its "
                   "JSON-lines log) in the database, skipping those already stored, print counts as JSON, exit")
    s.set_defaults(func=cmd_collect)

    s = sub.add_parser("events", help="read the event queue")
    es = s.add_subparsers(dest="events_cmd", required=True)
    t = es.add_parser("tail", help="print events as JSON lines")
    t.add_argument("--events", type=Path, required=True)
    t.add_argument("--from", dest="from_seq", type=non_negative_int, default=None, help="start at this sequence number")
    t.add_argument("--follow", action="store_true", help="keep printing new events")
    t.set_defaults(func=cmd_events)

    s = sub.add_parser("enroll", help="enrol a person in the gallery from one or more images")
    s.add_argument("images", nargs="+", type=Path)
    s.add_argument("--gallery", type=Path, required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--replace", action="store_true", help="replace the person's existing embeddings")
    s.add_argument("--json", action="store_true")
    _add_model_args(s)
    s.set_defaults(func=cmd_enroll)

    s = sub.add_parser(
        "gallery", help="list or remove enrolled people; reenroll them from their recorded images after a "
        "recognizer upgrade; publish the gallery to a fleet of boxes (docs/fleet.md)"
    )
    s.add_argument("action", choices=["list", "remove", "reenroll", "publish"])
    s.add_argument("name", nargs="?", help="remove: who; reenroll: only this person (default: everyone)")
    s.add_argument("--gallery", type=Path, required=True)
    s.add_argument("--json", action="store_true")
    s.add_argument("--broker", help="publish: MQTT HOST[:PORT] (default: [fleet.gallery] of --config)")
    s.add_argument("--key-file", type=Path, help="publish: the fleet's HMAC key file")
    s.add_argument("--topic", help="publish: retained topic (default: [fleet.gallery] topic or edge-mtl/gallery)")
    s.add_argument("--gallery-version", type=positive_int, help="publish: version (default: now in milliseconds)")
    s.add_argument("--recognizer-version", help="publish: whose embeddings (default: the one in the gallery)")
    _add_model_args(s)
    s.set_defaults(func=cmd_gallery)

    s = sub.add_parser("eval", help="measure accuracy: verification (LFW), attributes (UTKFace), detection")
    s.add_argument("what", choices=["verification", "attributes", "detection"])
    s.add_argument("--data", type=Path, help="../shared/data (default: $EDGE_MTL_DATA)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--limit", type=non_negative_int, default=0, help="evaluate at most this many images/pairs (0: all)")
    s.add_argument(
        "--split", default="val", help="attributes: val (default), all, reserved (the held-out 1,000; with "
        "--utkface-full), fairface (FairFace-540; with --fairface) or a folder of UTKFace-named images; "
        "detection: val",
    )
    s.add_argument("--utkface-full", type=Path, help="attributes --split reserved: folder of the full UTKFace")
    s.add_argument("--fairface", type=Path, help="attributes --split fairface: the fairface/ folder of "
                   "thlaiquid-ai/demographic-test-images (ground_truth.json beside the images)")
    s.add_argument("--pairs", default="pairs.txt", help="verification: LFW pairs file (View 2: pairs.txt)")
    s.add_argument("--every-pair", action="store_true", help="verification: also TAR at FAR 1e-3 and 1e-4 over "
                   "every pair of all LFW images (every impostor pair, not only the listed ones; with --limit, "
                   "of the listed pairs' images)")
    s.add_argument("--video", type=Path, help="detection: video for false detections per frame")
    s.add_argument("--quality-bins", type=non_negative_int, default=0, help="verification: error by pair-quality bins")
    s.add_argument(
        "--stamp", action="store_true", help="verification: write the measured thresholds (FAR 1e-2, 1e-3) into the "
        "recognizer file, where an unset identity.threshold finds them (needs the build extra)",
    )
    _add_model_args(s)
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("bench", help="measure per-stage latency and throughput")
    s.add_argument("--video", type=Path, help="video for the end-to-end measurement")
    s.add_argument("--frames", type=positive_int, default=100, help="frames of the clip to decode and process")
    s.add_argument("--batches", type=batch_list, default=[1, 8, 32], help="recognizer batch sizes (1,8,32)")
    s.add_argument("--precisions", type=precision_list, default=["fp32"], help="comma list of fp32,fp16,int8")
    s.add_argument("--json", action="store_true")
    from edge_mtl.commands.bench_cameras import add_cameras_arguments

    add_cameras_arguments(s, positive_int)
    _add_model_args(s)
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("train", help="train a detector or recognizer from a TOML config")
    s.add_argument("--config", type=Path, required=True)
    s.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    s.add_argument("--max-steps", type=positive_int, help="stop after this many steps")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser(
        "average-checkpoints", help="average the weights of several checkpoints of one run (e.g. its last epochs)"
    )
    s.add_argument("checkpoints", type=Path, nargs="+")
    s.add_argument("--output", "-o", type=Path, required=True)
    s.set_defaults(func=cmd_average_checkpoints)

    s = sub.add_parser(
        "calibrate-quality",
        help="put a recognizer checkpoint's quality score on a reference release's scale (affine, rank-preserving)",
    )
    s.add_argument("checkpoint", type=Path)
    s.add_argument("--reference", type=Path, required=True, help="the release whose scale to keep (ONNX)")
    s.add_argument("--crops", type=Path, required=True, help="crop cache folder (edge_mtl.data.crops)")
    s.add_argument("--sources", nargs="+", required=True, help="cached sources to draw faces from")
    s.add_argument("--faces", type=positive_int, default=20000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--output", "-o", type=Path, required=True)
    s.set_defaults(func=cmd_calibrate_quality)

    s = sub.add_parser(
        "score-cohort",
        help="put a cohort into a recognizer file: identity scores normalised against it hold better at strict "
        "false-accept rates (then measure its thresholds: eval verification --stamp)",
    )
    s.add_argument("model", type=Path, help="recognizer ONNX, rewritten in place unless --output")
    s.add_argument("--crops", type=Path, help="crop cache folder with celeba_samples (a recognizer training run's)")
    s.add_argument("--source", default="celeba_samples", help="cached source of faces of known identity")
    s.add_argument("--people", type=positive_int, default=2500, help="identities in the cohort")
    s.add_argument("--top", type=positive_int, default=200, help="highest cohort similarities per face")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--from", dest="copy_from", type=Path,
                   help="copy the cohort of this file of the same weights (for INT8 / FP16 variants)")
    s.add_argument("--output", "-o", type=Path)
    s.set_defaults(func=cmd_score_cohort)

    s = sub.add_parser("export", help="export a checkpoint to ONNX with metadata and a parity check")
    s.add_argument("checkpoint", type=Path)
    s.add_argument("--output", "-o", type=Path, required=True)
    s.add_argument("--version", default="dev")
    s.add_argument(
        "--compatible-with", action="append", default=[], metavar="VERSION[:MARGIN]",
        help="recognizer: an earlier version whose gallery embeddings this one may be matched against until people "
        "are re-enrolled, with MARGIN (default 0) taken off those similarities (measure it first: "
        "benchmarks/recognizer_view1.py --at-threshold; repeatable, in order of preference)",
    )
    s.add_argument("--no-check", action="store_true")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("quantize", help="FP16 or INT8 (Q/DQ, calibrated on real faces) variant of an ONNX model")
    s.add_argument("model", type=Path)
    s.add_argument("--output", "-o", type=Path, required=True)
    s.add_argument("--precision", choices=["fp16", "int8"], required=True)
    s.add_argument("--calib", type=Path, help="calibration recipe/list (default: calib/ for the model kind)")
    s.add_argument("--data", type=Path, help="../shared/data")
    s.add_argument("--no-gate", action="store_true", help="skip the accuracy gate")
    s.add_argument("--detector", type=Path, help="detector ONNX that crops faces for recognizer calibration")
    s.add_argument("--method", choices=["minmax", "entropy", "percentile", "auto"], default="minmax",
                   help="int8 calibration method ('auto': try all, keep the best on held-out faces)")
    s.add_argument("--layout", choices=["shared", "tensorrt"], default="shared",
                   help="int8 Q/DQ placement: 'shared' runs fast on ONNX Runtime CPU and TensorRT")
    s.add_argument("--exclude", action="append", default=[], metavar="NODE", help="keep this node in float")
    s.add_argument("--auto-exclude", type=non_negative_int, default=0, metavar="N",
                   help="if the gate fails, keep up to N of the most sensitive nodes in float")
    s.add_argument("--save-calib", type=Path, help="write the calibration ranges (JSON) here, e.g. calib/")
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser("build-engine", help="compile an FP16 or Q/DQ ONNX into a TensorRT engine (on the target)")
    s.add_argument("model", type=Path)
    s.add_argument("--cache", type=Path, default=Path("engines"))
    s.add_argument("--max-batch", type=positive_int, default=None,
                   help="largest batch (default: recognizer 32, detector 4)")
    s.add_argument("--workspace-mb", type=positive_int, default=1024)
    s.add_argument("--max-side", type=positive_int,
                   help="detector: largest input height/width (default: its input size)")
    s.add_argument("--force", action="store_true", help="rebuild even if the cache has a matching engine")
    s.set_defaults(func=cmd_build_engine)

    s = sub.add_parser("demo", help="synthesise a sample clip and run the whole pipeline on it (CPU)")
    s.add_argument("--out", type=Path, default=Path("demo-out"))
    s.add_argument("--frames", type=positive_int, default=150)
    s.set_defaults(func=cmd_demo)
    return p


def setup_logging(level: str) -> None:
    """Handlers are configured here, in the entry point only; logs go to stderr (journald)."""
    logging.basicConfig(
        level=getattr(logging, level),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = {"detect", "analyze", "events", "gallery", "check-config", "eval", "enroll"}
    setup_logging(args.log_level or ("WARNING" if args.command in quiet else "INFO"))
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        sys.stderr.write(f"edge-mtl: error: {e}\n")
        return 2
    except EdgeMtlError as e:
        sys.stderr.write(f"edge-mtl: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:
        log.debug("internal error", exc_info=True)
        sys.stderr.write(f"edge-mtl: internal error: {type(e).__name__}: {e} (run with --log-level DEBUG)\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
