"""`edge-mtl collect` in process against a real mosquitto and a real PostgreSQL: boxes' forwarders -> broker ->
collector -> tables; deduplication on the event id, bad messages, lag per box, retention."""

from __future__ import annotations

import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_mtl.config import MqttForwarder as MqttConfig
from edge_mtl.events.mqtt import MqttForwarder
from edge_mtl.events.queue import EventQueue
from edge_mtl.fleet.collect import Collector
from edge_mtl.fleet.config import CollectorConfig
from tests.events.events_helpers import Broker, free_port, make_event
from tests.fleet.fleet_helpers import Postgres
from tests.proc_helpers import wait_until

pytestmark = pytest.mark.timeout(120)
TOPIC = "fleet-test/events"


def collector_config(pg: Postgres, broker: Broker, **kw: object) -> CollectorConfig:
    return CollectorConfig.model_validate({
        "broker": {"host": "127.0.0.1", "port": broker.port, "topic": TOPIC, "client_id": "collector-test"},
        "database": {"dsn": pg.dsn, "reconnect_max_s": 1.0},
        "batch_wait_s": 0.05,
        **kw,
    })


@pytest.fixture
def running(postgres: Postgres, fleet_broker: Broker) -> Iterator[Collector]:
    col = Collector(collector_config(postgres, fleet_broker, metrics_port=free_port()))
    t = threading.Thread(target=col.run, name="collector", daemon=True)
    t.start()
    wait_until(lambda: col.stats.subscribed, 20, "the collector's subscription")
    yield col
    col.stop()
    t.join(20)
    assert not t.is_alive(), "collector did not stop"


def _box_queue(tmp: Path, box: str, site: str | None, n: int) -> EventQueue:
    q = EventQueue(tmp / f"{box}.db")
    evs = [make_event(i, camera="door") for i in range(n)]  # the same camera name on every box
    for e in evs:
        e.box, e.site = box, site
    q.append(evs)
    return q


def _count(pg: Postgres, sql: str, *params: object) -> int:
    return int(pg.query(sql, *params)[0][0])  # type: ignore[call-overload]


def test_two_boxes_same_camera_name_stored_once_each(
    running: Collector, postgres: Postgres, fleet_broker: Broker, tmp_path: Path
) -> None:
    # the schema is there once the collector runs, before any event: a dashboard's first query finds the table
    assert _count(postgres, "SELECT count(*) FROM edge_mtl.events") == 0
    queues = {"box-a": _box_queue(tmp_path, "box-a", "north", 300), "box-b": _box_queue(tmp_path, "box-b", None, 200)}
    fwds = [MqttForwarder(q.path, MqttConfig(host="127.0.0.1", port=fleet_broker.port, topic=TOPIC,
                                             client_id=f"fwd-{box}"), poll_s=0.05)
            for box, q in queues.items()]
    for f in fwds:
        f.start()
    try:
        wait_until(lambda: _count(postgres, "SELECT count(*) FROM edge_mtl.events") == 500, 60,
                   "500 events in PostgreSQL")
    finally:
        for f in fwds:
            assert f.stop(10)
    rows = postgres.query("SELECT box, site, camera, count(*), count(DISTINCT seq), min(seq), max(seq) "
                          "FROM edge_mtl.events GROUP BY box, site, camera ORDER BY box")
    assert rows == [("box-a", "north", "door", 300, 300, 1, 300), ("box-b", None, "door", 200, 200, 1, 200)]
    ids = {str(r[0]) for r in postgres.query("SELECT id FROM edge_mtl.events WHERE box = 'box-a'")}
    assert ids == {json.loads(b)["id"] for _, b in queues["box-a"].read_raw(1, 1000)}
    # columns a dashboard filters on, and the whole event as jsonb
    one = postgres.query("SELECT identity, similarity, age_years, gender, type, body->>'track_id' FROM "
                         "edge_mtl.events WHERE box = 'box-b' AND seq = 7")[0]
    assert one[0] == "alice" and abs(float(one[1]) - 0.71) < 1e-6 and one[3] == "female"  # type: ignore[arg-type]
    assert one[4] == "face.identified" and one[5] == "door-6"
    assert postgres.query("SELECT box, site, last_seq, events FROM edge_mtl.boxes ORDER BY box") == [
        ("box-a", "north", 300, 300), ("box-b", None, 200, 200)]
    indexes = {r[0] for r in postgres.query("SELECT indexname FROM pg_indexes WHERE schemaname = 'edge_mtl'")}
    assert {"events_ts", "events_box_camera_ts", "events_site_ts", "events_identity_ts", "events_type_ts"} <= indexes
    # the collector's own account (updated just after the commit)
    boxes = running.stats.boxes
    wait_until(lambda: boxes.get("box-a") and boxes["box-a"].stored == 300 and boxes.get("box-b")
               and boxes["box-b"].stored == 200, 10, "the collector's per-box counts")
    assert boxes["box-a"].last_seq == 300 and boxes["box-b"].site is None and boxes["box-a"].site == "north"

    # lag per box in the metrics
    port = running.cfg.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'edge_mtl_collector_lag_seconds{box="box-a",site="north"}' in text
    assert 'edge_mtl_collector_last_seq{box="box-b",site=""} 200' in text
    assert 'edge_mtl_collector_stored_total{box="box-a",site="north"} 300' in text


def test_redelivered_and_malformed_messages(
    running: Collector, postgres: Postgres, fleet_broker: Broker, tmp_path: Path
) -> None:
    """A second delivery of an event (what a broker does after a lost acknowledgement) is skipped; a message that
    is not an event (bad JSON, the wrong schema, not UTF-8) is counted and logged, never stored, and does not
    hold up the ones after it."""
    import paho.mqtt.client as mqtt

    q = _box_queue(tmp_path, "box-c", "south", 20)
    bodies = [b for _, b in q.read_raw(1, 100)]
    pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"p-{uuid.uuid4().hex[:6]}")
    pub.connect("127.0.0.1", fleet_broker.port)
    pub.loop_start()
    try:
        for body in [*bodies, *bodies[:10], "{not json", json.dumps({"schema": "x"}), b"\xff\xfe not utf-8"]:
            pub.publish(f"{TOPIC}/south/box-c/door", body, qos=1).wait_for_publish(10)
        st = running.stats
        wait_until(lambda: st.stored + st.duplicates + st.rejected >= 33, 30, "33 messages through the collector")
    finally:
        pub.disconnect()
        pub.loop_stop()
    assert _count(postgres, "SELECT count(*) FROM edge_mtl.events WHERE box = 'box-c'") == 20
    assert running.stats.duplicates == 10 and running.stats.rejected == 3
    assert postgres.query("SELECT events, last_seq FROM edge_mtl.boxes WHERE box = 'box-c'") == [(20, 20)]


def test_retention_deletes_by_capture_time(postgres: Postgres) -> None:
    import psycopg

    from edge_mtl.events.schema import decode_event, encode_event
    from edge_mtl.fleet.store import EventStore

    old, new = make_event(1), make_event(2)
    old.seq, new.seq = 1, 2
    old.ts = "2020-01-01T00:00:00.000Z"
    with psycopg.connect(postgres.dsn) as conn:
        store = EventStore(conn, "retention_test")
        store.create()
        store.create()  # idempotent
        texts = [encode_event(e) for e in (old, new)]
        marks = store.insert([(decode_event(t), t) for t in texts])
        assert marks[""].stored == 2
        assert store.insert([(decode_event(t), t) for t in texts])[""].stored == 0
        assert store.prune(365 * 86400.0, chunk=1) == 1
    assert postgres.query("SELECT seq FROM retention_test.events") == [(2,)]


def test_events_and_gallery_cross_a_site_bridge(
    running: Collector, postgres: Postgres, fleet_broker: Broker, tmp_path: Path
) -> None:
    """A site broker bridged to the central one (docs/fleet.md): while the link is down the site broker holds the
    box's events; once the central broker is back they reach PostgreSQL; the retained gallery published centrally
    reaches a box that talks to the site broker only."""
    import numpy as np

    from edge_mtl.config import BrokerConfig, FleetGalleryConfig
    from edge_mtl.fleet.gallery import GallerySync, publish_gallery
    from edge_mtl.identity.gallery import Gallery
    from tests.events.events_helpers import mosquitto_path
    from tests.fleet.conftest import FLEET_BROKER

    d = tmp_path / "site-broker"
    d.mkdir()
    bridge = (f"{FLEET_BROKER}connection central\naddress 127.0.0.1:{fleet_broker.port}\ncleansession false\n"
              f"remote_clientid site-west-bridge\nrestart_timeout 1 2\ntopic {TOPIC}/# out 1\n"
              "topic fleet-test/gallery in 1\n")
    site = Broker(str(mosquitto_path()), d, free_port(), extra=bridge, persistence=True)
    site.start()
    fwd = MqttForwarder(_box_queue(tmp_path, "box-w", "west", 100).path,
                        MqttConfig(host="127.0.0.1", port=site.port, topic=TOPIC, client_id="fwd-w"), poll_s=0.05)
    try:
        fleet_broker.stop()  # the site's link to the centre is down
        fwd.start()
        wait_until(lambda: fwd.delivered_seq == 100, 30, "the site broker to acknowledge 100 events")
        fleet_broker.start()
        wait_until(lambda: _count(postgres, "SELECT count(*) FROM edge_mtl.events WHERE box = 'box-w'") == 100, 60,
                   "the site's 100 events in PostgreSQL")

        key = tmp_path / "fleet.key"
        key.write_bytes(b"k" * 32)
        key.chmod(0o600)
        with Gallery(tmp_path / "central.db") as g:
            g.add("carol", np.eye(1, 8, dtype=np.float32), model="rec-1")
        publish_gallery(tmp_path / "central.db", key, BrokerConfig(port=fleet_broker.port), "fleet-test/gallery",
                        version=3)
        sync = GallerySync(FleetGalleryConfig(port=site.port, topic="fleet-test/gallery", key_file=key),
                           tmp_path / "box-w" / "gallery.db", "rec-1", box="box-w")
        sync.start()
        try:
            wait_until(lambda: sync.state()["version"] == 3, 30, "the central gallery on a box of the site")
        finally:
            sync.stop()
    finally:
        fwd.stop(10)
        site.stop()
    assert postgres.query("SELECT min(seq), max(seq), count(DISTINCT id) FROM edge_mtl.events WHERE box = 'box-w'") \
        == [(1, 100, 100)]
