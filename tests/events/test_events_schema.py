"""Schema edge_mtl.event/v1: encoding, strict decoding, and property tests of the validator."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import numpy as np
import pytest
from events_helpers import make_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_mtl.events.schema import MAX_INT, SCHEMA_KEYS, decode_event, encode_event, utc_ts
from edge_mtl.types import EVENT_SCHEMA, EVENT_TYPES, Event

EPOCH0 = 1_795_370_400.0
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# -- utc_ts -----------------------------------------------------------------------------------------------------


def test_utc_ts_format() -> None:
    assert utc_ts(1_795_370_400.123) == "2026-11-22T18:00:00.123Z"
    assert utc_ts(0) == "1970-01-01T00:00:00.000Z"
    # rounding to milliseconds carries into the second instead of printing ".1000"
    assert utc_ts(1.9996) == "1970-01-01T00:00:02.000Z"
    assert utc_ts(1_795_370_400.0004) == "2026-11-22T18:00:00.000Z"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "12", None, True, 1e20])
def test_utc_ts_rejects(bad: Any) -> None:
    with pytest.raises(ValueError, match="utc_ts"):
        utc_ts(bad)


# -- encode ----------------------------------------------------------------------------------------------------


def test_encode_is_compact_ordered_one_line() -> None:
    ev = make_event(3)
    ev.seq = 1042
    text = encode_event(ev)
    assert "\n" not in text and ", " not in text and ": " not in text
    d = json.loads(text)
    assert tuple(d) == SCHEMA_KEYS
    assert d["schema"] == EVENT_SCHEMA and d["seq"] == 1042 and d["id"] == ev.id
    assert decode_event(text) == d
    assert decode_event(text.encode()) == d
    assert decode_event(d) == d


def test_box_and_site_are_optional_keys_after_the_v1_ones() -> None:
    """A box in a fleet names itself (docs/events.md); a box that does not writes exactly the v1 keys."""
    from edge_mtl.events.mqtt import event_topic

    ev = make_event(3, box="lobby-box-1", site="hq")
    ev.seq = 7
    d = json.loads(encode_event(ev))
    assert tuple(d) == (*SCHEMA_KEYS, "box", "site") and d["box"] == "lobby-box-1" and d["site"] == "hq"
    assert tuple(decode_event(json.dumps({k: d[k] for k in reversed(list(d))}))) == (*SCHEMA_KEYS, "box", "site")
    assert event_topic("edge-mtl/events", d) == "edge-mtl/events/hq/lobby-box-1/lobby"
    only_box = {k: v for k, v in d.items() if k != "site"}
    assert tuple(decode_event(only_box)) == (*SCHEMA_KEYS, "box")
    assert event_topic("t", only_box) == "t/lobby-box-1/lobby"
    plain = make_event(3)
    plain.seq = 7
    assert event_topic("t", json.loads(encode_event(plain))) == "t/lobby"
    for key, bad in (("box", "a/b"), ("site", "+"), ("box", ""), ("site", 3), ("box", None)):
        with pytest.raises(ValueError, match=rf"{key}: expected 1-64 of"):
            decode_event({**d, key: bad})
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['boxes'\]"):
        decode_event({**d, "boxes": "x"})


def test_encode_minimal_event_has_every_key_with_nulls() -> None:
    ev = Event(type="face.appeared", ts=utc_ts(EPOCH0), camera="cam0", track_id="cam0-1", frame=0, seq=1)
    d = json.loads(encode_event(ev))
    assert tuple(d) == SCHEMA_KEYS
    assert [d[k] for k in ("identity", "age", "gender", "bbox", "quality", "duration_s")] == [None] * 6


def test_encode_accepts_numpy_scalars_and_is_ascii() -> None:
    ev = make_event(
        1,
        identity={"name": "Zoë \u2028 李", "similarity": np.float32(0.5)},
        bbox=[np.float32(1.5), np.float64(2.0), np.int64(3), 4],
        quality=np.float64(0.25),
    )
    ev.seq = 7
    text = encode_event(ev)
    assert text.isascii()  # no raw U+2028: line readers cannot split an event
    d = decode_event(text)
    assert d["identity"]["name"] == "Zoë \u2028 李"
    assert d["bbox"] == [1.5, 2.0, 3, 4]


def test_encode_requires_seq_and_valid_fields() -> None:
    ev = make_event()
    with pytest.raises(ValueError, match="no seq"):
        encode_event(ev)
    ev.seq = 1
    ev.quality = float("nan")
    with pytest.raises(ValueError, match="serialise"):
        encode_event(ev)
    ev.quality = 1.5
    with pytest.raises(ValueError, match=r"quality: expected a number in \[0, 1\]"):
        encode_event(ev)
    bad_cam = make_event(camera="lobby/door", seq=1)
    with pytest.raises(ValueError, match="camera"):
        encode_event(bad_cam)


# -- decode: explicit rejections -------------------------------------------------------------------------------


def _valid() -> dict[str, Any]:
    ev = make_event(5)
    ev.seq = 12
    return json.loads(encode_event(ev))


def _set(path: str, value: Any) -> dict[str, Any]:
    d = _valid()
    *parents, last = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    node[last] = value
    return d


REJECT = [
    (_set("schema", "edge_mtl.event/v2"), "schema"),
    (_set("seq", 0), "seq"),
    (_set("seq", -3), "seq"),
    (_set("seq", 1.0), "seq"),
    (_set("seq", True), "seq"),
    (_set("seq", "12"), "seq"),
    (_set("seq", None), "seq"),
    (_set("seq", MAX_INT + 1), "seq"),
    (_set("id", "not-a-uuid"), "id"),
    (_set("id", str(uuid.uuid4()).upper()), "id"),
    (_set("type", "face.seen"), "type"),
    (_set("type", None), "type"),
    (_set("ts", "2026-11-22T18:00:00.123"), "ts"),
    (_set("ts", "2026-11-22T18:00:00.123+00:00"), "ts"),
    (_set("ts", "2026-11-22 18:00:00Z"), "ts"),
    (_set("ts", "2026-13-22T18:00:00Z"), "ts"),
    (_set("ts", "2026-02-30T18:00:00Z"), "ts"),
    (_set("ts", 1795370400), "ts"),
    (_set("camera", ""), "camera"),
    (_set("camera", "a/b"), "camera"),
    (_set("camera", "a+#"), "camera"),
    (_set("camera", "x" * 65), "camera"),
    (_set("track_id", ""), "track_id"),
    (_set("track_id", 17), "track_id"),
    (_set("frame", -1), "frame"),
    (_set("frame", 1.5), "frame"),
    (_set("frame", False), "frame"),
    (_set("identity", "alice"), "identity"),
    (_set("identity", {"name": "alice"}), "identity"),
    (_set("identity", {"name": "alice", "similarity": 0.7, "x": 1}), "identity"),
    (_set("identity.similarity", 1.5), "identity.similarity"),
    (_set("identity.similarity", "0.7"), "identity.similarity"),
    (_set("identity.name", ""), "identity.name"),
    (_set("identity.name", None), "identity.name"),
    (_set("age", {"years": 30}), "age"),
    (_set("age.years", -1), "age.years"),
    (_set("age.std", -0.5), "age.std"),
    (_set("age.years", True), "age.years"),
    (_set("gender.label", "other"), "gender.label"),
    (_set("gender.label", "Female"), "gender.label"),
    (_set("gender.confidence", 1.01), "gender.confidence"),
    (_set("gender", []), "gender"),
    (_set("bbox", [1, 2, 3]), "bbox"),
    (_set("bbox", [1, 2, 3, 4, 5]), "bbox"),
    (_set("bbox", [1, 2, -3, 4]), "bbox.w"),
    (_set("bbox", [1, "2", 3, 4]), "bbox.y"),
    (_set("bbox", {"x": 1}), "bbox"),
    (_set("quality", -0.01), "quality"),
    (_set("quality", "high"), "quality"),
    (_set("duration_s", -1.0), "duration_s"),
]


@pytest.mark.parametrize(("obj", "where"), REJECT, ids=[f"{w}-{i}" for i, (_, w) in enumerate(REJECT)])
def test_decode_rejects_bad_values(obj: dict[str, Any], where: str) -> None:
    for form in (obj, json.dumps(obj)):
        with pytest.raises(ValueError) as info:
            decode_event(form)
        msg = str(info.value)
        assert "\n" not in msg
        assert msg.startswith(f"not an {EVENT_SCHEMA} event: {where}"), msg


def test_decode_rejects_structure() -> None:
    d = _valid()
    compact = json.dumps(d, separators=(",", ":"))
    assert '"quality":0.83' in compact
    cases: list[Any] = [
        "",
        "null",
        "[]",
        '"text"',
        "{",
        b"\xff\xfe",
        json.dumps(d) + "x",
        json.dumps(d)[:-1],
        json.dumps({k: v for k, v in d.items() if k != "frame"}),
        json.dumps({**d, "extra": 1}),
        compact.replace('"quality":0.83', '"quality":NaN'),
        compact.replace('"quality":0.83', '"quality":-Infinity'),
        json.dumps(d)[:-1] + ',"seq":13}',  # duplicate key: the second value must not silently win
        "[" * 100_000,  # deep nesting: RecursionError inside json must surface as ValueError
        42,
        None,
        ["a"],
    ]
    for c in cases:
        with pytest.raises(ValueError, match=f"^not an {EVENT_SCHEMA} event: "):
            decode_event(c)


def test_decode_messages_name_the_problem() -> None:
    d = _valid()
    del d["ts"]
    with pytest.raises(ValueError, match=r"missing key\(s\) \['ts'\]"):
        decode_event(d)
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['image'\]"):
        decode_event({**_valid(), "image": "..."})
    with pytest.raises(ValueError, match="duplicate key 'seq'"):
        decode_event(json.dumps(_valid())[:-1] + ',"seq":13}')


def test_decode_returns_schema_order() -> None:
    d = _valid()
    shuffled = dict(reversed(list(d.items())))
    assert tuple(decode_event(json.dumps(shuffled))) == SCHEMA_KEYS


# -- property tests --------------------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
text = st.text(min_size=1, max_size=40)


def _ts(dt: Any, digits: int) -> str:
    base = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    return base + ("." + f"{dt.microsecond:06d}"[:digits] if digits else "") + "Z"


valid_events = st.fixed_dictionaries(
    {
        "schema": st.just(EVENT_SCHEMA),
        "seq": st.integers(1, MAX_INT),
        "id": st.uuids().map(str),
        "type": st.sampled_from(EVENT_TYPES),
        "ts": st.builds(_ts, st.datetimes(), st.integers(0, 6)),
        "camera": st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
        "track_id": text,
        "frame": st.integers(0, MAX_INT),
        "identity": st.none() | st.fixed_dictionaries({"name": text, "similarity": st.floats(-1, 1)}),
        "age": st.none() | st.fixed_dictionaries({"years": st.floats(0, 200), "std": st.floats(0, 200)}),
        "gender": st.none()
        | st.fixed_dictionaries({"label": st.sampled_from(["male", "female"]), "confidence": st.floats(0, 1)}),
        "bbox": st.none() | st.tuples(finite, finite, st.floats(0, 1e6), st.floats(0, 1e6)).map(list),
        "quality": st.none() | st.floats(0, 1),
        "duration_s": st.none() | st.floats(0, 1e9),
    }
)

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(valid_events)
def test_property_valid_events_round_trip(d: dict[str, Any]) -> None:
    text = json.dumps(d)
    assert decode_event(text) == d
    assert decode_event(d) == d
    # through an Event and the encoder: the same object, compact, in schema order
    ev = Event(**{k: v for k, v in d.items() if k != "schema"})
    out = encode_event(ev)
    assert json.loads(out) == d
    assert tuple(json.loads(out)) == SCHEMA_KEYS
    assert out == json.dumps({k: d[k] for k in SCHEMA_KEYS}, separators=(",", ":"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=10,
)

# Per key: values that are certainly invalid there.
_not_obj = st.booleans() | st.integers() | st.floats() | st.text(max_size=5) | st.lists(st.integers(), max_size=3)
INVALID: dict[str, st.SearchStrategy[Any]] = {
    "schema": (st.text(max_size=30).filter(lambda s: s != EVENT_SCHEMA)) | st.none() | st.integers(),
    "seq": st.integers(max_value=0) | st.integers(min_value=MAX_INT + 1) | st.floats() | st.text() | st.none(),
    "id": st.text(max_size=40).filter(lambda s: UUID_RE.fullmatch(s) is None)
    | st.uuids().map(lambda u: str(u).upper())
    | st.integers(),
    "type": st.text(max_size=20).filter(lambda s: s not in EVENT_TYPES) | st.none() | st.integers(),
    "ts": st.text(max_size=30).filter(lambda s: not s.endswith("Z")) | st.floats() | st.none(),
    "camera": st.text(max_size=5).map(lambda s: s + "/") | st.just("") | st.integers() | st.none(),
    "track_id": st.just("") | st.integers() | st.none() | st.lists(st.text(), max_size=2),
    "frame": st.integers(max_value=-1) | st.floats() | st.text() | st.none() | st.booleans(),
    "identity": _not_obj
    | st.fixed_dictionaries({"name": text, "similarity": st.floats().filter(lambda x: not -1 <= x <= 1)})
    | st.dictionaries(st.text(max_size=5), json_values, max_size=3).filter(lambda d: set(d) != {"name", "similarity"}),
    "age": _not_obj
    | st.fixed_dictionaries({"years": st.floats(max_value=-0.001) | st.text(), "std": st.floats(0, 10)})
    | st.fixed_dictionaries({"years": st.floats(0, 100), "std": st.floats(max_value=-0.001) | st.none()}),
    "gender": _not_obj
    | st.fixed_dictionaries(
        {"label": st.text().filter(lambda s: s not in ("male", "female")), "confidence": st.floats(0, 1)}
    )
    | st.fixed_dictionaries({"label": st.just("male"), "confidence": st.floats().filter(lambda x: not 0 <= x <= 1)}),
    "bbox": _not_obj
    | st.lists(finite, max_size=3)
    | st.lists(finite, min_size=5, max_size=6)
    | st.tuples(finite, finite, st.floats(max_value=-0.001), finite).map(list)
    | st.tuples(finite, st.text(), finite, finite).map(list),
    "quality": st.floats().filter(lambda x: not 0 <= x <= 1) | st.text() | st.booleans(),
    "duration_s": st.floats().filter(lambda x: not x >= 0) | st.text() | st.booleans() | st.lists(finite),
}


@st.composite
def invalid_events(draw: st.DrawFn) -> dict[str, Any]:
    d = draw(valid_events)
    kind = draw(st.sampled_from(["replace", "drop", "add"]))
    if kind == "drop":
        del d[draw(st.sampled_from(SCHEMA_KEYS))]
    elif kind == "add":
        key = draw(st.text(max_size=12).filter(lambda k: k not in SCHEMA_KEYS))
        d[key] = draw(json_values)
    else:
        key = draw(st.sampled_from(SCHEMA_KEYS))
        d[key] = draw(INVALID[key])
    return d


@PROPS
@given(invalid_events())
def test_property_mutations_are_rejected_with_value_error(d: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=f"^not an {EVENT_SCHEMA} event: "):
        decode_event(d)
    try:
        text = json.dumps(d)
    except ValueError:
        return  # NaN in a dict cannot even be written as strict JSON
    with pytest.raises(ValueError, match=f"^not an {EVENT_SCHEMA} event: "):
        decode_event(text)


@st.composite
def garbled(draw: st.DrawFn) -> bytes:
    raw = bytearray(json.dumps(draw(valid_events)).encode())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        i = draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del raw[i:]
        elif op == "insert":
            raw[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif raw:
            del raw[i]
    return bytes(raw)


def _decode_or_value_error(obj: Any) -> None:
    try:
        out = decode_event(obj)
    except ValueError as e:
        assert str(e).startswith(f"not an {EVENT_SCHEMA} event: ") and "\n" not in str(e)
        return
    # whatever was accepted is a valid event that survives another round trip
    assert decode_event(json.dumps(out)) == out


@PROPS
@given(garbled())
def test_property_garbled_bytes_only_ever_raise_value_error(raw: bytes) -> None:
    _decode_or_value_error(raw)
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return
    _decode_or_value_error(s)


@PROPS
@given(json_values | st.binary(max_size=50) | st.text(max_size=50))
def test_property_arbitrary_input_only_ever_raises_value_error(obj: Any) -> None:
    _decode_or_value_error(obj)
