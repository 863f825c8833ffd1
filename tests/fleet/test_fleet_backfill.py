"""Automatic backfill against a real PostgreSQL and a real mosquitto: the store keeps each named box's holes in
`seq` as gaps, the collector asks the box to resend them, the box's forwarder does, and every event ends up stored
once; a gap nobody fills is given up, logged and counted."""

from __future__ import annotations

import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_mtl.config import MqttForwarder as MqttConfig
from edge_mtl.events.mqtt import MqttForwarder
from edge_mtl.events.queue import EventQueue
from edge_mtl.events.schema import decode_event, encode_event
from edge_mtl.fleet.collect import Collector
from tests.events.events_helpers import Broker, free_port, make_event
from tests.fleet.fleet_helpers import Postgres
from tests.fleet.test_collector import TOPIC, collector_config
from tests.proc_helpers import wait_until

pytestmark = pytest.mark.timeout(120)
CONTROL = "fleet-test/control"


def _events(box: str | None, seqs: list[int], site: str | None = None) -> list[tuple[dict[str, object], str]]:
    out = []
    for s in seqs:
        e = make_event(s)
        e.seq, e.box, e.site, e.id = s, box, site, str(uuid.uuid4())
        text = encode_event(e)
        out.append((decode_event(text), text))
    return out


def test_store_keeps_each_named_box_gaps(postgres: Postgres) -> None:
    import psycopg

    from edge_mtl.fleet.store import EventStore, holes

    assert holes(3, 9, [1, 4, 5, 8]) == [(3, 3), (6, 7), (9, 9)] and holes(1, 2, [1, 2]) == []

    def gaps(box: str) -> list[tuple[object, ...]]:
        return postgres.query("SELECT from_seq, to_seq FROM gap_test.gaps WHERE box = %s ORDER BY from_seq", box)

    with psycopg.connect(postgres.dsn) as conn:
        store = EventStore(conn, "gap_test", gap_grace_s=0.0)
        store.create()
        first = _events("b1", [1, 2, 5, 6])
        store.insert(first)
        assert gaps("b1") == [(3, 4)]
        store.insert(_events("b1", [9]))
        assert gaps("b1") == [(3, 4), (7, 8)]
        store.insert(first)  # redelivered: nothing new, the gaps stay as they are
        assert gaps("b1") == [(3, 4), (7, 8)]
        due = store.due_gaps()
        assert [(g.box, g.from_seq, g.to_seq, g.requests) for g in due] == [("b1", 3, 4, 0), ("b1", 7, 8, 0)]
        store.gap_requested(due[0], 0.0)
        assert {g.from_seq: g.requests for g in store.due_gaps()} == {3: 1, 7: 0}  # the longest unasked first
        store.insert(_events("b1", [4]))  # a resend narrows the gap and starts its requests over
        assert gaps("b1") == [(3, 3), (7, 8)] and {g.from_seq: g.requests for g in store.due_gaps()} == {3: 0, 7: 0}
        store.insert(_events("b1", [3, 7, 8]))
        assert gaps("b1") == []
        store.insert(_events("b2", [10, 11], site="hq"))  # a box first seen at seq 10: 1..9 never arrived
        assert gaps("b2") == [(1, 9)]
        store.insert(_events("b2", [5]))  # one in the middle splits it
        assert gaps("b2") == [(1, 4), (6, 9)]
        store.insert(_events(None, [1, 5]))  # a box without a name cannot be asked: no gaps kept for it
        assert gaps("") == []
        g = store.due_gaps()[0]
        store.give_up_gap(g)
        assert [(x.from_seq, x.to_seq) for x in store.due_gaps()] == [(6, 9)]  # a given-up gap is not asked for
        assert store.missing() == {"b2": (4, 4)}
        # the box answers that 2..7 are no longer on it: the open gap 6..9 splits, 6..7 given up now, 8..9 still
        # asked for; the gap given up for no answer is left as it was
        assert store.gone_from_box("b2", 2, 7) == [(6, 7)]
        assert postgres.query("SELECT from_seq, to_seq, given_up, reason FROM gap_test.gaps WHERE box = 'b2' "
                              "ORDER BY from_seq") == [(1, 4, True, "no answer"), (6, 7, True, "not on the box"),
                                                       (8, 9, False, None)]
        assert store.gone_from_box("b2", 20, 30) == [] and store.missing() == {"b2": (2, 6)}


@pytest.fixture
def box_queue(tmp_path: Path) -> Iterator[EventQueue]:
    q = EventQueue(tmp_path / "box-r.db")
    yield q
    q.close()


def _append(q: EventQueue, start: int, n: int) -> None:
    evs = [make_event(i, camera="door") for i in range(start, start + n)]
    for e in evs:
        e.box, e.site = "box-r", "east"
    q.append(evs)


def _forwarding_box(q: EventQueue, port: int, client_id: str) -> MqttForwarder:
    """Box box-r of site east with 150 events in its queue, forwarding to the broker on `port` and listening for
    replay requests on CONTROL; started, and returned once all 150 are acknowledged and it listens."""
    _append(q, 0, 150)
    fwd = MqttForwarder(q.path, MqttConfig(host="127.0.0.1", port=port, topic=TOPIC, client_id=client_id,
                                           control_topic=CONTROL), poll_s=0.05, box="box-r", site="east")
    fwd.start()
    wait_until(lambda: fwd.delivered_seq == 150 and fwd.listening, 30, "150 events acknowledged by the broker")
    return fwd


def test_events_the_broker_never_carried_are_asked_for_and_stored_once(
    postgres: Postgres, fleet_broker: Broker, box_queue: EventQueue
) -> None:
    """The gap docs/fleet.md names: a box publishes before the collector's session exists, so the broker drops
    those events. Once the collector sees the box's later events it asks for seq 1..150, the box resends them,
    and all 200 are stored once."""
    fwd = _forwarding_box(box_queue, fleet_broker.port, "fwd-r")
    col: Collector | None = None
    t: threading.Thread | None = None
    try:
        cfg = collector_config(postgres, fleet_broker, metrics_port=free_port(), backfill_grace_s=0.5)
        cfg.broker.control_topic = CONTROL
        col = Collector(cfg)
        t = threading.Thread(target=col.run, name="collector", daemon=True)
        t.start()
        wait_until(lambda: col is not None and col.stats.subscribed, 20, "the collector's subscription")
        _append(box_queue, 150, 50)
        wait_until(lambda: postgres.query("SELECT count(*), count(DISTINCT seq) FROM edge_mtl.events "
                                          "WHERE box = 'box-r'") == [(200, 200)], 60, "all 200 events stored")
        wait_until(lambda: postgres.query("SELECT count(*) FROM edge_mtl.gaps") == [(0,)], 20, "no gap left")
        assert fwd.replayed == 150 and fwd.delivered_seq == 200
        assert col.stats.replay_requests >= 1 and col.stats.duplicates == 0
        wait_until(lambda: col is not None and col.stats.boxes["box-r"].missing == 0, 20, "metrics updated")
        text = urllib.request.urlopen(f"http://127.0.0.1:{col.cfg.metrics_port}/metrics", timeout=5).read().decode()
        assert 'edge_mtl_collector_missing_events{box="box-r",site="east"} 0' in text
        assert "edge_mtl_collector_replay_requests_total" in text
    finally:
        fwd.stop(10)
        if col is not None and t is not None:
            col.stop()
            t.join(20)


def test_a_gap_nobody_fills_is_given_up_logged_and_counted(
    postgres: Postgres, fleet_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """Events 1..4 of a box that cannot resend them (here: nothing listens on its control topic): asked for with
    growing pauses, then given up after backfill_give_up_s with one error line, kept in `gaps`, and counted."""
    import paho.mqtt.client as mqtt

    col = Collector(collector_config(postgres, fleet_broker, metrics_port=free_port(), backfill_grace_s=0.2,
                                     backfill_retry_s=0.2, backfill_give_up_s=1.5))
    t = threading.Thread(target=col.run, name="collector", daemon=True)
    pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="mute-box")
    with caplog.at_level("INFO", logger="edge_mtl.fleet.collect"):
        t.start()
        try:
            wait_until(lambda: col.stats.subscribed, 20, "the collector's subscription")
            pub.connect("127.0.0.1", fleet_broker.port)
            pub.loop_start()
            for _, text in _events("box-z", [5, 6]):
                pub.publish(f"{TOPIC}/box-z/door", text, qos=1).wait_for_publish(10)
            wait_until(lambda: postgres.query("SELECT given_up FROM edge_mtl.gaps WHERE box = 'box-z'") == [(True,)],
                       30, "the gap given up")
            wait_until(lambda: col.stats.boxes["box-z"].given_up == 4, 20, "the given-up events counted")
        finally:
            pub.disconnect()
            pub.loop_stop()
            col.stop()
            t.join(20)
    assert postgres.query("SELECT from_seq, to_seq, requests >= 2 FROM edge_mtl.gaps") == [(1, 4, True)]
    said = [r.getMessage() for r in caplog.records if r.name == "edge_mtl.fleet.collect"]
    assert any("box box-z: events 1..4 never arrived; asked the box to resend them (request 1)" in m for m in said)
    gave_up = [m for m in said if "given up" in m]
    assert len(gave_up) == 1 and "collect --import" in gave_up[0], said
    assert col.stats.boxes["box-z"].missing == 0


def test_events_the_box_no_longer_holds_are_given_up_at_once(
    postgres: Postgres, fleet_broker: Broker, box_queue: EventQueue, caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """A box whose retention removed part of what the collector asks for says so on its `gone` topic: the
    collector gives that part up at once (one error line, reason 'not on the box') instead of asking for a day,
    and stores the rest the box resends. The box talks to a site broker bridged to the central one as docs/fleet.md
    configures it, so the request and the answer both cross the bridge."""
    from tests.events.events_helpers import mosquitto_path
    from tests.fleet.conftest import FLEET_BROKER

    d = tmp_path / "site-broker"
    d.mkdir()
    bridge = (f"{FLEET_BROKER}connection central\naddress 127.0.0.1:{fleet_broker.port}\ncleansession false\n"
              f"remote_clientid site-east-bridge\nrestart_timeout 1 2\ntopic {TOPIC}/# out 1\n"
              f"topic {CONTROL}/+/+/replay in 1\ntopic {CONTROL}/+/+/gone out 1\n")
    site = Broker(str(mosquitto_path()), d, free_port(), extra=bridge, persistence=True)
    site.start()
    fwd: MqttForwarder | None = None
    col: Collector | None = None
    t: threading.Thread | None = None
    try:
        fwd = _forwarding_box(box_queue, site.port, "fwd-g")
        assert box_queue.prune(None, 90) == 60  # the box's retention removed seq 1..60
        cfg = collector_config(postgres, fleet_broker, metrics_port=free_port(), backfill_grace_s=0.5,
                               backfill_give_up_s=3600.0)
        cfg.broker.control_topic = CONTROL
        col = Collector(cfg)
        t = threading.Thread(target=col.run, name="collector", daemon=True)
        with caplog.at_level("INFO", logger="edge_mtl.fleet.collect"):
            t.start()
            wait_until(lambda: col is not None and col.stats.subscribed, 20, "the collector's subscription")
            _append(box_queue, 150, 10)
            wait_until(lambda: postgres.query("SELECT count(*) FROM edge_mtl.events WHERE box = 'box-r'") == [(100,)],
                       60, "the 90 events the box still held and the 10 new ones stored")
            wait_until(lambda: postgres.query("SELECT from_seq, to_seq, given_up, reason FROM edge_mtl.gaps") ==
                       [(1, 60, True, "not on the box")], 30, "the part the box no longer holds given up")
            wait_until(lambda: col is not None and col.stats.boxes["box-r"].given_up == 60, 20, "counted")
        assert col.stats.boxes["box-r"].missing == 0 and fwd.replayed == 90
        said = [r.getMessage() for r in caplog.records if r.name == "edge_mtl.fleet.collect"]
        gone = [m for m in said if "no longer on the box" in m]
        assert gone == ["box east/box-r: events 1..60 are no longer on the box (its retention removed them): given "
                        "up (its JSON-lines log may still hold them: edge-mtl collect --import)"], said
    finally:
        if fwd is not None:
            fwd.stop(10)
        if col is not None and t is not None:
            col.stop()
            t.join(20)
        site.stop()
