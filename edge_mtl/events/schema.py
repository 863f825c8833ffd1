"""The wire form of events, schema `edge_mtl.event/v1` (docs/events.md).

`encode_event` is the only way an `Event` becomes bytes anywhere in edge-mtl (queue, JSONL, MQTT), and it runs
the same strict validator that consumers can use (`decode_event`), so nothing the daemon writes can fail a
consumer's check. The validator rejects rather than repairs: a dashboard must be able to trust every field.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from edge_mtl.types import EVENT_SCHEMA, EVENT_TYPES, Event

#: Every key of an event, in the order `encode_event` writes them.
SCHEMA_KEYS: tuple[str, ...] = (
    "schema",
    "seq",
    "id",
    "type",
    "ts",
    "camera",
    "track_id",
    "frame",
    "identity",
    "age",
    "gender",
    "bbox",
    "quality",
    "duration_s",
)

#: Largest seq/frame: SQLite's INTEGER range.
MAX_INT = (1 << 63) - 1
#: Camera names become MQTT topic levels, so they are restricted to the characters CameraConfig allows.
_CAMERA_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TS_RE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?Z")
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MAX_TEXT = 256  # names and track ids: bounded so one event stays one short line
_MAX_AGE_YEARS = 200.0


def utc_ts(epoch_seconds: float) -> str:
    """ISO-8601 UTC with milliseconds and a `Z`, e.g. "2026-11-22T18:00:00.123Z" (the schema's `ts`)."""
    if isinstance(epoch_seconds, bool) or not isinstance(epoch_seconds, int | float):
        raise ValueError(f"utc_ts: expected seconds since the epoch, got {type(epoch_seconds).__name__}")
    if not math.isfinite(epoch_seconds):
        raise ValueError(f"utc_ts: expected finite seconds, got {epoch_seconds}")
    ms = round(epoch_seconds * 1000)  # round once, so .9996 s becomes the next second and not ".1000"
    secs, frac = divmod(ms, 1000)
    try:
        dt = datetime.fromtimestamp(secs, tz=UTC)
    except (OverflowError, OSError, ValueError) as e:
        raise ValueError(f"utc_ts: {epoch_seconds} is out of range: {e}") from None
    return f"{dt.strftime('%Y-%m-%dT%H:%M:%S')}.{frac:03d}Z"


def _jsonable(o: object) -> Any:
    """json.dumps fallback: numpy scalars and arrays (what the pipeline naturally produces) become Python ones."""
    item = getattr(o, "tolist", None)
    if callable(item):
        return item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def encode_event(ev: Event) -> str:
    """One compact JSON line (keys in schema order, ASCII only) for an event whose `seq` the queue assigned.

    ASCII-only output keeps every line free of raw U+2028/U+2029 and other separators that some line readers
    split on. Raises ValueError if the event does not satisfy the schema (the same checks as `decode_event`).
    """
    if not isinstance(ev, Event):
        raise ValueError(f"encode_event: expected an Event, got {type(ev).__name__}")
    if ev.seq is None:
        raise ValueError("encode_event: event has no seq (the queue assigns it)")
    try:
        text = json.dumps(ev.to_dict(), separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=_jsonable)
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"encode_event: cannot serialise event: {e}") from None
    decode_event(text)
    return text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(where: str, v: object, lo: float | None = None, hi: float | None = None) -> float:
    """A finite JSON number (int or float, never bool) within [lo, hi]."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{where}: expected a number, got {_kind(v)}")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{where}: expected a finite number, got {v}")
    try:
        f = float(v)
    except OverflowError:
        raise ValueError(f"{where}: number out of range") from None
    if (lo is not None and f < lo) or (hi is not None and f > hi):
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ValueError(f"{where}: expected a number in [{lo_s}, {hi_s}], got {f:g}")
    return f


def _text(where: str, v: object, max_len: int = _MAX_TEXT) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{where}: expected a string, got {_kind(v)}")
    if not v or len(v) > max_len:
        raise ValueError(f"{where}: expected 1 to {max_len} characters, got {len(v)}")
    return v


def _kind(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list | tuple):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _show(v: object) -> str:
    """A short rendering of a bad value for an error message (never the whole of a huge value)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return repr(v) if abs(v) <= MAX_INT else "an out-of-range integer"
    if isinstance(v, str):
        r = repr(v)
        return r if len(r) <= 40 else r[:37] + "..."
    return _kind(v)


def _object(where: str, v: object, keys: tuple[str, ...]) -> dict[str, Any]:
    """A JSON object with exactly `keys` (string keys only)."""
    if not isinstance(v, dict):
        raise ValueError(f"{where}: expected null or an object, got {_kind(v)}")
    got = set(v)
    if got != set(keys):
        missing = [k for k in keys if k not in got]
        extra = sorted(got - set(keys), key=repr)
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else [])
        raise ValueError(f"{where}: expected keys {list(keys)}, " + ", ".join(parts))
    return v


def _check_ts(v: object) -> str:
    if not isinstance(v, str):
        raise ValueError(f"ts: expected an ISO-8601 UTC string, got {_kind(v)}")
    m = _TS_RE.fullmatch(v)
    if m is None:
        raise ValueError(f"ts: expected ISO-8601 UTC like 2026-11-22T18:00:00.123Z, got {v[:40]!r}")
    try:
        datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise ValueError(f"ts: not a valid date and time: {v!r}") from None
    return v


def _check_id(v: object) -> str:
    if not isinstance(v, str) or _UUID_RE.fullmatch(v) is None:
        shown = repr(v[:40]) if isinstance(v, str) else _kind(v)
        raise ValueError(f"id: expected a lowercase UUID string, got {shown}")
    uuid.UUID(v)  # the regex already guarantees this parses
    return v


def _validate(d: dict[str, Any]) -> dict[str, Any]:
    keys = set(d)
    if keys != set(SCHEMA_KEYS):
        missing = [k for k in SCHEMA_KEYS if k not in keys]
        extra = sorted(keys - set(SCHEMA_KEYS), key=repr)
        if missing:
            raise ValueError(f"missing key(s) {missing}")
        raise ValueError(f"unexpected key(s) {extra}")
    if d["schema"] != EVENT_SCHEMA:
        shown = repr(d["schema"])[:60] if isinstance(d["schema"], str) else _kind(d["schema"])
        raise ValueError(f"schema: expected {EVENT_SCHEMA!r}, got {shown}")
    seq = d["seq"]
    if not _is_int(seq) or not 1 <= seq <= MAX_INT:
        raise ValueError(f"seq: expected a positive integer, got {_show(seq)}")
    _check_id(d["id"])
    if d["type"] not in EVENT_TYPES:
        shown = repr(d["type"])[:60] if isinstance(d["type"], str) else _kind(d["type"])
        raise ValueError(f"type: expected one of {list(EVENT_TYPES)}, got {shown}")
    _check_ts(d["ts"])
    camera = d["camera"]
    if not isinstance(camera, str) or _CAMERA_RE.fullmatch(camera) is None:
        shown = repr(camera[:70]) if isinstance(camera, str) else _kind(camera)
        raise ValueError(f"camera: expected 1-64 of [A-Za-z0-9_.-], got {shown}")
    _text("track_id", d["track_id"])
    frame = d["frame"]
    if not _is_int(frame) or not 0 <= frame <= MAX_INT:
        raise ValueError(f"frame: expected a non-negative integer, got {_show(frame)}")
    if d["identity"] is not None:
        ident = _object("identity", d["identity"], ("name", "similarity"))
        _text("identity.name", ident["name"])
        _number("identity.similarity", ident["similarity"], -1.0, 1.0)
    if d["age"] is not None:
        age = _object("age", d["age"], ("years", "std"))
        _number("age.years", age["years"], 0.0, _MAX_AGE_YEARS)
        _number("age.std", age["std"], 0.0, _MAX_AGE_YEARS)
    if d["gender"] is not None:
        gender = _object("gender", d["gender"], ("label", "confidence"))
        if gender["label"] not in ("male", "female"):
            shown = repr(gender["label"])[:40] if isinstance(gender["label"], str) else _kind(gender["label"])
            raise ValueError(f"gender.label: expected 'male' or 'female', got {shown}")
        _number("gender.confidence", gender["confidence"], 0.0, 1.0)
    bbox = d["bbox"]
    if bbox is not None:
        if not isinstance(bbox, list | tuple) or len(bbox) != 4:
            got = f"{len(bbox)} items" if isinstance(bbox, list | tuple) else _kind(bbox)
            raise ValueError(f"bbox: expected null or [x, y, w, h], got {got}")
        for name, v in zip(("x", "y", "w", "h"), bbox, strict=True):
            _number(f"bbox.{name}", v, 0.0 if name in ("w", "h") else None)
    if d["quality"] is not None:
        _number("quality", d["quality"], 0.0, 1.0)
    if d["duration_s"] is not None:
        _number("duration_s", d["duration_s"], 0.0)
    return {k: d[k] for k in SCHEMA_KEYS}


def decode_event(obj: str | bytes | dict[str, Any]) -> dict[str, Any]:
    """Parse and strictly validate one `edge_mtl.event/v1` event; returns it as a dict in schema order.

    Raises ValueError with a one-line reason for anything else (bad JSON, duplicate keys, NaN, wrong types,
    missing or extra keys, values out of range), and never another exception type.
    """
    try:
        if isinstance(obj, bytes | bytearray):
            obj = bytes(obj).decode("utf-8")
        if isinstance(obj, str):
            d = json.loads(obj, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
        elif isinstance(obj, dict):
            d = obj
        else:
            raise ValueError(f"expected a JSON string, bytes or a dict, got {type(obj).__name__}")
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {_kind(d)}")
        return _validate(d)
    except ValueError as e:  # includes JSONDecodeError and UnicodeDecodeError: reworded on one line
        msg = " ".join(str(e).split())
        raise ValueError(f"not an {EVENT_SCHEMA} event: {msg}") from None
    except (RecursionError, TypeError, OverflowError) as e:
        raise ValueError(f"not an {EVENT_SCHEMA} event: {type(e).__name__}: {' '.join(str(e).split())}") from None
