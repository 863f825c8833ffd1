"""USB and CSI cameras through Video4Linux2 (OpenCV's CAP_V4L2 backend).

A device node that does not exist when the source is created is an InputError (a typo in ``/dev/videoN`` should
exit 2, not retry forever). Once created, the source behaves like any live camera: if the device fails to open
or stops delivering (unplugged, driver hiccup), it is closed and reopened with backoff until it comes back.
OpenCV's V4L2 backend waits at most its select timeout (10 s by default, env
``OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT``) for a frame, so a stalled device cannot block the reader forever.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path
from typing import Unpack

import cv2

from edge_mtl.capture.base import CaptureOpenError, LiveOptions, LiveSource, open_capture
from edge_mtl.errors import InputError

log = logging.getLogger(__name__)

_INDEX = re.compile(r"\d+")
_DEV_VIDEO = re.compile(r"/dev/video\d+")


def is_device(source: str) -> bool:
    """An integer ("0"), /dev/videoN, or any existing character device (e.g. /dev/v4l/by-id/... links)."""
    if _INDEX.fullmatch(source) or _DEV_VIDEO.fullmatch(source):
        return True
    try:
        return stat.S_ISCHR(os.stat(source).st_mode)
    except (OSError, ValueError):
        return False


def device_path(source: str) -> Path:
    """/dev/videoN for an integer, else the path as given."""
    return Path(f"/dev/video{source}") if _INDEX.fullmatch(source) else Path(source)


class V4L2Source(LiveSource):
    """A V4L2 camera: live (latest frame only), driver queue shortened to one buffer to keep latency low."""

    kind = "v4l2"

    def __init__(self, name: str, device: str | Path, **options: Unpack[LiveOptions]) -> None:
        self.device = device_path(str(device))
        if not self.device.exists():
            raise InputError(f"{self.device}: no such video device")
        super().__init__(name, str(self.device), **options)

    def _open_capture(self) -> cv2.VideoCapture:
        if not self.device.exists():
            raise CaptureOpenError("device node is gone (unplugged?)")
        cap = open_capture(str(self.device), cv2.CAP_V4L2, [], "cannot open the device (busy, or not a capture device)")
        # Fewer driver buffers means the frame we grab is the newest one, not one queued seconds ago.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap
