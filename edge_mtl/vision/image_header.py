"""An image's width and height from its file header, without decoding it (to refuse huge images cheaply).

A 40000 x 40000 PNG is a few hundred kilobytes on disk and 4.8 GB once decoded: OpenCV's own guard
(CV_IO_MAX_IMAGE_PIXELS, 2^30 pixels) aborts with a multi-line assertion, and anything just below it takes
seconds and gigabytes. `header_size` reads PNG, JPEG, BMP, GIF, WebP, TIFF and PNM headers; None for anything
else (those are checked after decoding).
"""

from __future__ import annotations

import struct
from pathlib import Path

HEAD_BYTES = 64 * 1024  # JPEG's SOF marker can follow large EXIF/ICC segments; beyond this, give up


def header_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) read from the header of the image at `path`, or None when unknown."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
            if head[:4] in (b"II*\x00", b"MM\x00*"):  # TIFF: the first IFD may sit anywhere (often at the end)
                end = "<" if head[:2] == b"II" else ">"
                f.seek(struct.unpack(end + "I", head[4:8])[0])
                return _tiff(end, f.read(2 + 12 * 64))
    except (OSError, struct.error, ValueError):
        return None
    try:
        return _size(head)
    except (struct.error, IndexError, ValueError):
        return None


def _size(b: bytes) -> tuple[int, int] | None:
    if b[:8] == b"\x89PNG\r\n\x1a\n" and b[12:16] == b"IHDR":
        w, h = struct.unpack(">II", b[16:24])
        return int(w), int(h)
    if b[:2] == b"\xff\xd8":
        return _jpeg(b)
    if b[:2] == b"BM":
        w, h = struct.unpack("<ii", b[18:26])
        return abs(int(w)), abs(int(h))
    if b[:6] in (b"GIF87a", b"GIF89a"):
        w, h = struct.unpack("<HH", b[6:10])
        return int(w), int(h)
    if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
        return _webp(b)
    if b[:1] == b"P" and b[1:2] in b"123456":
        return _pnm(b)
    return None


def _jpeg(b: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", b[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", b[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None


def _webp(b: bytes) -> tuple[int, int] | None:
    chunk = b[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(b[24:27], "little") + 1
        h = int.from_bytes(b[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L":
        bits = int.from_bytes(b[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", b[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    return None


def _tiff(end: str, ifd: bytes) -> tuple[int, int] | None:
    """Width and height (tags 256, 257) from the first IFD (`ifd`: its bytes; `end`: the byte order)."""
    (n,) = struct.unpack(end + "H", ifd[:2])
    dims: dict[int, int] = {}
    for k in range(min(n, 64)):
        e = 2 + 12 * k
        tag, typ = struct.unpack(end + "HH", ifd[e : e + 4])
        if tag in (256, 257):
            fmt = end + ("H" if typ == 3 else "I")
            (v,) = struct.unpack(fmt, ifd[e + 8 : e + 8 + struct.calcsize(fmt)])
            dims[tag] = int(v)
    if 256 in dims and 257 in dims:
        return dims[256], dims[257]
    return None


def _pnm(b: bytes) -> tuple[int, int] | None:
    fields: list[int] = []
    for line in b[2:4096].split(b"\n"):
        line = line.split(b"#", 1)[0]
        for tok in line.split():
            fields.append(int(tok))
            if len(fields) == 2:
                return fields[0], fields[1]
    return None
