"""Soak test of the daemon (not run in CI): N looping file cameras through the real `edge-mtl run` for some minutes.

It starts `edge-mtl run` as a child process exactly as systemd would (config file, metrics on localhost), samples
the child's resident memory (psutil when installed, else /proc/<pid>/status) and its /metrics every few seconds,
stops it with SIGTERM and prints one JSON report: RSS growth (MB, and a MB/hour slope after warm-up), events per
minute, frames dropped, fps per camera, and whether it exited cleanly.

    nice -n 10 python benchmarks/soak.py                          # 4 cameras, 10 minutes, shipped models
    python benchmarks/soak.py --minutes 2 --detector d.onnx --recognizer r.onnx --video clip.mp4 \\
        --set detector.score_threshold=0.3 --set tracker.confirm_frames=1

Videos default to the clips in $EDGE_MTL_DATA/videos (../shared/data), reused round-robin for the cameras. File
cameras are paced at their native frame rate (`realtime = true`, the latest-frame policy of a live camera, so
drops are real); `--no-realtime` feeds frames as fast as the pipeline takes them instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float | None:
    """Resident memory of `pid` in MB: psutil if available, else VmRSS from /proc."""
    try:
        import psutil

        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except ImportError:
        pass
    except Exception:  # the process is gone
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def scrape(port: int) -> dict[str, dict[str, float]]:
    """/metrics as {metric: {labels: value}}; empty when the daemon does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            out.setdefault(m.group(1), {})[m.group(2) or ""] = float(m.group(3))
    return out


def per_camera(metrics: dict[str, dict[str, float]], name: str) -> dict[str, float]:
    return {re.sub(r'camera="(.*)"', r"\1", k): v for k, v in metrics.get(name, {}).items()}


def default_videos() -> list[Path]:
    from edge_mtl.paths import data_root

    root = data_root()
    if root is None or not (root / "videos").is_dir():
        raise SystemExit("no videos: give --video FILE (or set EDGE_MTL_DATA)")
    vids = sorted((root / "videos").glob("*.mp4"))
    if not vids:
        raise SystemExit(f"no .mp4 in {root / 'videos'}")
    return vids


def write_config(path: Path, args: argparse.Namespace, videos: list[Path], work: Path, port: int) -> None:
    lines = []
    for i in range(args.cameras):
        v = videos[i % len(videos)]
        lines += ["[[cameras]]", f'name = "cam{i}"', f'source = "{v}"', "loop = true",
                  f"realtime = {'false' if args.no_realtime else 'true'}", ""]
    det = args.detector or REPO / "export" / "detector.onnx"
    rec = args.recognizer or REPO / "export" / "recognizer.onnx"
    tables: dict[str, list[str]] = {
        "detector": [f'model = "{det}"'],
        "recognizer": [f'model = "{rec}"'],
        "events": [f'db = "{work / "events.db"}"', f'jsonl = "{work / "events.jsonl"}"'],
        "service": [f"metrics_port = {port}", "stop_timeout_s = 20.0"],
    }
    for item in args.set or []:  # section.key=value (a TOML value), e.g. tracker.confirm_frames=1
        key, _, value = item.partition("=")
        section, _, name = key.rpartition(".")
        if not section or not name or not value:
            raise SystemExit(f"--set {item!r}: expected section.key=value")
        tables.setdefault(section, []).append(f"{name} = {value}")
    for section, body in tables.items():
        lines += [f"[{section}]", *body, ""]
    path.write_text("\n".join(lines))


def slope_mb_per_hour(samples: list[dict[str, Any]]) -> float | None:
    pts = [(s["t_s"], s["rss_mb"]) for s in samples if s.get("rss_mb") is not None]
    if len(pts) < 3:
        return None
    n = len(pts)
    mx = sum(t for t, _ in pts) / n
    my = sum(r for _, r in pts) / n
    var = sum((t - mx) ** 2 for t, _ in pts)
    if var == 0:
        return None
    return sum((t - mx) * (r - my) for t, r in pts) / var * 3600.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    videos = [Path(v) for v in args.video] if args.video else default_videos()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="edge-mtl-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = work / "edge-mtl.toml"
    write_config(cfg, args, videos, work, port)
    check = subprocess.run([sys.executable, "-m", "edge_mtl", "check-config", str(cfg)], capture_output=True,
                           text=True)
    if check.returncode != 0:
        raise SystemExit(f"config rejected: {check.stderr.strip()}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log = (work / "daemon.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "edge_mtl", "run", "--config", str(cfg)], stdout=log,
                            stderr=log, env=env, cwd=work)
    samples: list[dict[str, Any]] = []
    try:
        t_ready = None
        deadline = time.monotonic() + 600
        while t_ready is None:
            if proc.poll() is not None:
                raise SystemExit(f"edge-mtl run exited with {proc.returncode}; see {work / 'daemon.log'}")
            if scrape(port).get("edge_mtl_ready", {}).get("") == 1:
                t_ready = time.monotonic()
            elif time.monotonic() > deadline:
                raise SystemExit("the daemon did not become ready within 10 minutes")
            else:
                time.sleep(0.5)
        end = t_ready + args.minutes * 60.0
        while True:
            now = time.monotonic()
            m = scrape(port)
            samples.append({
                "t_s": round(now - t_ready, 1),
                "rss_mb": rss_mb(proc.pid),
                "frames": per_camera(m, "edge_mtl_frames_total"),
                "dropped": per_camera(m, "edge_mtl_frames_dropped_total"),
                "corrupt": per_camera(m, "edge_mtl_frames_corrupt_total"),
                "events": sum(m.get("edge_mtl_events_total", {}).values()),
                "healthy": m.get("edge_mtl_healthy", {}).get(""),
            })
            if proc.poll() is not None or now >= end:
                break
            time.sleep(min(args.sample_s, max(0.0, end - now)))
        crashed = proc.poll() is not None
        if not crashed:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    return report(args, videos, work, samples, rc, crashed)


def report(args: argparse.Namespace, videos: list[Path], work: Path, samples: list[dict[str, Any]], rc: int,
           crashed: bool) -> dict[str, Any]:
    first, last = samples[0], samples[-1]
    elapsed_min = max(last["t_s"] / 60.0, 1e-9)
    warm_t = min(60.0, 0.2 * last["t_s"])  # allocator and caches settle in the first minute
    warm = [s for s in samples if s["t_s"] >= warm_t] or samples
    rss = [s["rss_mb"] for s in samples if s["rss_mb"] is not None]
    per_min: list[float] = []
    for i in range(1, int(elapsed_min) + 1):
        at = [s for s in samples if s["t_s"] <= i * 60.0]
        before = [s for s in samples if s["t_s"] <= (i - 1) * 60.0] or [first]
        if at:
            per_min.append(at[-1]["events"] - before[-1]["events"])
    cams = sorted(last["frames"])
    return {
        "minutes": round(elapsed_min, 2),
        "cameras": args.cameras,
        "realtime": not args.no_realtime,
        "videos": [str(v) for v in videos],
        "models": {"detector": str(args.detector or REPO / "export" / "detector.onnx"),
                   "recognizer": str(args.recognizer or REPO / "export" / "recognizer.onnx")},
        "exit_code": rc,
        "crashed": crashed,
        "rss_mb": {
            "first": round(rss[0], 1) if rss else None,
            "after_warmup": round(warm[0]["rss_mb"], 1) if warm[0]["rss_mb"] is not None else None,
            "last": round(rss[-1], 1) if rss else None,
            "max": round(max(rss), 1) if rss else None,
            "growth_mb": round(rss[-1] - rss[0], 1) if rss else None,
            "growth_after_warmup_mb": round(rss[-1] - warm[0]["rss_mb"], 1)
            if rss and warm[0]["rss_mb"] is not None else None,
            # a trend, not a verdict: meaningful over the default 10 minutes, noisy over 2
            "slope_after_warmup_mb_per_hour": (lambda v: None if v is None else round(v, 1))(slope_mb_per_hour(warm)),
            "slope_window_s": round(warm[-1]["t_s"] - warm[0]["t_s"], 1),
        },
        "rss_series_mb": [[s["t_s"], None if s["rss_mb"] is None else round(s["rss_mb"], 1)] for s in samples],
        "events_total": int(last["events"]),
        "events_per_min": round(last["events"] / elapsed_min, 1),
        "events_per_min_series": per_min,
        "drops_total": int(sum(last["dropped"].values())),
        "drops_per_camera": {c: int(last["dropped"].get(c, 0)) for c in cams},
        "corrupt_total": int(sum(last["corrupt"].values())),
        "fps_per_camera": {c: round(last["frames"][c] / max(last["t_s"], 1e-9), 2) for c in cams},
        "unhealthy_samples": sum(1 for s in samples if s["healthy"] == 0),
        "unhealthy_at_s": [s["t_s"] for s in samples if s["healthy"] == 0],
        "samples": len(samples),
        "workdir": str(work),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--video", action="append", help="video file for the cameras (repeat; reused round-robin)")
    p.add_argument("--detector", type=Path, help="detector ONNX (default: export/detector.onnx)")
    p.add_argument("--recognizer", type=Path, help="recognizer ONNX (default: export/recognizer.onnx)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="a config setting (TOML value), e.g. --set detector.score_threshold=0.3 (repeat)")
    p.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--no-realtime", action="store_true", help="do not pace the files at their frame rate")
    p.add_argument("--workdir", type=Path, help="where the config, queue, log and daemon.log go (default: a tmp dir)")
    p.add_argument("--out", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=1)
    sys.stdout.write(text + "\n")
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if result["exit_code"] == 0 and not result["crashed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
