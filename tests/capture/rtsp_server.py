"""A real RTSP server for the capture tests (GStreamer's gst-rtsp-server), run as a subprocess with the system
Python, which has PyGObject: ``/usr/bin/python3 tests/capture/rtsp_server.py --port 8554 [--file clip.mp4]``.

With ``--file`` (an MP4 holding H.264) the stream is the file remuxed, not re-encoded, so the server costs almost
no CPU; every client gets its own pipeline from the file's first frame, paced in real time. Without it, a small
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
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def launch_line(args: argparse.Namespace) -> str:
    """The media pipeline in gst-launch syntax; the payloader must be named pay0."""
    if args.file:
        location = str(Path(args.file).resolve()).replace("\\", "\\\\").replace('"', '\\"')
        if args.repeat <= 1:
            return (
                f'( filesrc location="{location}" ! qtdemux name=d d.video_0 ! queue ! h264parse ! '
                "rtph264pay name=pay0 pt=96 config-interval=-1 )"
            )
        # the file played `repeat` times back to back (concat keeps the timeline running), still without encoding
        copies = " ".join(
            f'filesrc location="{location}" ! qtdemux name=d{i} d{i}.video_0 ! queue ! h264parse ! c.'
            for i in range(args.repeat)
        )
        return f"( concat name=c ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 {copies} )"
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
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--max-seconds", type=int, default=300, help="quit after this long in any case")
    args = ap.parse_args()
    if args.file and not Path(args.file).is_file():
        sys.stderr.write(f"{args.file}: no such file\n")
        return 2

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args))
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
