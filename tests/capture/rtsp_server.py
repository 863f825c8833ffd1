"""A real RTSP server for the capture tests (GStreamer's gst-rtsp-server), run as a subprocess with the system
Python, which has PyGObject: ``/usr/bin/python3 tests/capture/rtsp_server.py --port 8554 [--file clip.mp4]``.

With ``--file`` (an MP4 holding H.264) the stream is the file remuxed, not re-encoded, so the server costs almost
no CPU; every client gets its own pipeline from the file's first frame, paced in real time (``--repeat N``: N copies
remuxed back to back into one MP4 once, before serving). Without it, a small
synthetic pattern is encoded with x264 (ultrafast, zero latency) forever. The server prints one line
``READY rtsp://127.0.0.1:PORT/PATH`` on stdout once it listens, and quits on SIGTERM/SIGINT or after
``--max-seconds`` so a crashed test cannot leave it running.

Debian packages: python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base
gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly (x264enc, for the pattern).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def _quoted(path: Path) -> str:
    return '"' + str(path.resolve()).replace("\\", "\\\\").replace('"', '\\"') + '"'


def remux_repeated(clip: Path, repeat: int, out: Path, timeout_s: float = 60.0) -> None:
    """Write `clip`'s H.264 track `repeat` times back to back into the MP4 `out` (remuxed, not re-encoded; concat
    keeps the timeline running). Done once before serving: a concat inside every client's media pipeline failed
    to preroll about half the time, so clients waited out their open timeout."""
    copies = " ".join(
        f"filesrc location={_quoted(clip)} ! qtdemux name=d{i} d{i}.video_0 ! queue ! h264parse ! c."
        for i in range(repeat)
    )
    pipeline = Gst.parse_launch(
        f"concat name=c ! h264parse ! mp4mux ! filesink location={_quoted(out)} {copies}"
    )
    pipeline.set_state(Gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(
        int(timeout_s * Gst.SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type != Gst.MessageType.EOS:
        detail = msg.parse_error()[0].message if msg is not None else f"no EOS within {timeout_s:g} s"
        raise RuntimeError(f"cannot remux {clip} x{repeat}: {detail}")


def launch_line(args: argparse.Namespace, clip: Path | None) -> str:
    """The media pipeline in gst-launch syntax; the payloader must be named pay0."""
    if clip is not None:
        return (
            f"( filesrc location={_quoted(clip)} ! qtdemux name=d d.video_0 ! queue ! h264parse ! "
            "rtph264pay name=pay0 pt=96 config-interval=-1 )"
        )
    return (
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={args.width},height={args.height},"
        f"framerate={args.fps}/1 ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=300 "
        f"key-int-max={args.fps} ! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/test", help="mount point")
    ap.add_argument("--file", help="MP4 with an H.264 video track to remux (default: synthetic pattern)")
    ap.add_argument("--repeat", type=int, default=1, help="with --file: play it this many times back to back")
    ap.add_argument("--work-dir", help="where the repeated clip is written (removed on exit; a killed server "
                    "leaves it to the caller)")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--max-seconds", type=int, default=300, help="quit after this long in any case")
    args = ap.parse_args()
    if args.file and not Path(args.file).is_file():
        sys.stderr.write(f"{args.file}: no such file\n")
        return 2

    Gst.init(None)
    with tempfile.TemporaryDirectory(prefix="rtsp-server-", dir=args.work_dir) as tmp:
        clip = Path(args.file) if args.file else None
        if clip is not None and args.repeat > 1:
            remuxed = Path(tmp) / "repeated.mp4"
            remux_repeated(clip, args.repeat, remuxed)
            clip = remuxed
        return serve(args, clip)


def serve(args: argparse.Namespace, clip: Path | None) -> int:
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args, clip))
    factory.set_shared(False)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        sys.stderr.write(f"cannot listen on 127.0.0.1:{args.port}\n")
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    GLib.timeout_add_seconds(args.max_seconds, loop.quit)
    sys.stdout.write(f"READY rtsp://127.0.0.1:{args.port}{args.path}\n")
    sys.stdout.flush()
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
