"""MQTT forwarder against a real mosquitto broker: delivery, outages, resume, refusals, authentication."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from events_helpers import Broker, Collector, make_event, wait_until

from edge_mtl.config import MqttForwarder as MqttConfig
from edge_mtl.errors import InputError, MissingExtraError
from edge_mtl.events.queue import EventQueue

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'edge-mtl[mqtt]')")

from edge_mtl.events.mqtt import MqttForwarder

TOPIC = "edge-mtl/events"
pytestmark = pytest.mark.timeout(120)


def _cfg(port: int, **kw: object) -> MqttConfig:
    return MqttConfig(host="127.0.0.1", port=port, topic=TOPIC, client_id=f"fwd-{uuid.uuid4().hex[:8]}", **kw)


@pytest.fixture
def forwarders() -> Iterator[Callable[..., MqttForwarder]]:
    """Factory for fast-retrying forwarders; all are stopped at teardown."""
    made: list[MqttForwarder] = []

    def factory(db: Path, cfg: MqttConfig, **kw: object) -> MqttForwarder:
        opts: dict[str, object] = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "poll_s": 0.05, **kw}
        f = MqttForwarder(db, cfg, **opts)  # type: ignore[arg-type]
        made.append(f)
        return f

    yield factory
    for f in made:
        assert f.stop(timeout=10), "forwarder thread did not stop"


@pytest.fixture
def collectors() -> Iterator[Callable[..., Collector]]:
    made: list[Collector] = []

    def factory(port: int, **kw: object) -> Collector:
        c = Collector(port, TOPIC, **kw)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close()


def _append(q: EventQueue, start: int, n: int) -> list[int]:
    return q.append([make_event(i, camera=("lobby", "gate")[i % 2]) for i in range(start, start + n)])


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_every_event_arrives_on_its_camera_topic(
    queue: EventQueue,
    broker: Broker,
    forwarders: Callable[..., MqttForwarder],
    collectors: Callable[..., Collector],
    qos: int,
) -> None:
    sub = collectors(broker.port)
    _append(queue, 0, 30)
    fwd = forwarders(queue.path, _cfg(broker.port, qos=qos))
    fwd.start()
    sub.wait_for(set(range(1, 31)), 20)
    _append(queue, 30, 25)  # appended while the forwarder runs
    sub.wait_for(set(range(1, 56)), 20)
    wait_until(lambda: fwd.delivered_seq == 55, 10, "the forwarder's cursor")
    assert fwd.stop(10)
    assert queue.get_cursor(fwd.cursor_name) == 55
    stored = {e["seq"]: e for e in queue.read(1, 1000)}
    with sub.lock:
        messages = list(sub.messages)
    for topic, ev in messages:
        assert ev == stored[ev["seq"]]  # byte-for-byte the queued event
        assert topic == f"{TOPIC}/{ev['camera']}"
    assert sorted(set(sub.seqs())) == list(range(1, 56))


def test_mqtt_3_1_1_broker(
    queue: EventQueue, make_broker: Callable[..., Broker], forwarders: Callable[..., MqttForwarder],
    collectors: Callable[..., Collector],
) -> None:
    """Brokers and bridges that only speak MQTT 3.1.1 get the same events, exactly the queued bytes. The broker's
    connection log names the protocol each client spoke (mosquitto: p2 = 3.1.1, p5 = 5)."""
    broker = make_broker(extra="log_type notice")
    sub = collectors(broker.port)
    seqs = _append(queue, 0, 12)
    cfg = _cfg(broker.port, protocol="3.1.1")
    fwd = forwarders(queue.path, cfg)
    fwd.start()
    sub.wait_for(set(seqs), 20)
    wait_until(lambda: fwd.delivered_seq == seqs[-1], 10, "the forwarder's cursor")
    stored = {e["seq"]: e for e in queue.read(1, 100)}
    with sub.lock:
        assert sorted(ev["seq"] for _, ev in sub.messages) == seqs
        assert all(ev == stored[ev["seq"]] for _, ev in sub.messages)
    log = broker.log.read_text()
    assert re.search(rf"as {cfg.client_id} \(p2,", log), log[-2000:]


@pytest.mark.timeout(180)
def test_broker_outage_loses_nothing(
    queue: EventQueue,
    make_broker: Callable[..., Broker],
    forwarders: Callable[..., MqttForwarder],
    collectors: Callable[..., Collector],
) -> None:
    """Freeze the broker, then stop it, keep appending, restart it on the same port: every event is delivered.

    The subscriber has a persistent session on a broker with persistence, so the restarted broker still holds its
    subscription and queues what the forwarder sends before the subscriber has reconnected: whatever the order
    of the reconnections, a missing event can only mean the forwarder dropped it.
    """
    broker = make_broker(persistence=True)
    sub = collectors(broker.port, client_id=f"sub-{uuid.uuid4().hex[:8]}", persistent=True)
    fwd = forwarders(queue.path, _cfg(broker.port, qos=1))
    fwd.start()
    _append(queue, 0, 20)
    sub.wait_for(set(range(1, 21)), 20)
    wait_until(lambda: fwd.delivered_seq == 20, 10, "delivery before the outage")

    # A hung broker: the forwarder can publish into the socket, but nothing is acknowledged.
    broker.freeze()
    _append(queue, 20, 20)
    time.sleep(1.0)
    assert fwd.delivered_seq == 20, "events counted as delivered without the broker's acknowledgement"
    assert queue.get_cursor(fwd.cursor_name) == 20

    # Then it goes away; whatever was in flight is either saved by the broker or sent again by the forwarder.
    broker.stop()
    wait_until(lambda: not fwd.connected, 15, "the forwarder to notice the outage")
    for k in range(2):  # appended while the broker is down and the forwarder keeps retrying
        _append(queue, 40 + 10 * k, 10)
        time.sleep(0.5)
    assert fwd.delivered_seq == 20
    assert queue.get_cursor(fwd.cursor_name) == 20
    assert fwd.last_error is not None

    broker.start()
    wait_until(lambda: fwd.connected, 20, "the forwarder to reconnect")
    _append(queue, 60, 10)
    wait_until(lambda: fwd.delivered_seq == 70, 30, "delivery after the outage")
    sub.wait_for(set(range(1, 71)), 30)
    assert set(sub.seqs()) == set(range(1, 71))
    assert queue.get_cursor(fwd.cursor_name) == 70


def test_resumes_from_its_cursor_after_a_restart(
    queue: EventQueue, broker: Broker, forwarders: Callable[..., MqttForwarder], collectors: Callable[..., Collector]
) -> None:
    cfg = _cfg(broker.port)
    sub = collectors(broker.port)
    first = forwarders(queue.path, cfg)
    first.start()
    _append(queue, 0, 10)
    sub.wait_for(set(range(1, 11)), 20)
    assert first.stop(10)
    assert queue.get_cursor(first.cursor_name) == 10

    _append(queue, 10, 5)  # queued while no forwarder runs
    n_before = len(sub.seqs())
    second = forwarders(queue.path, cfg)
    assert second.delivered_seq == 10
    second.start()
    sub.wait_for(set(range(11, 16)), 20)
    wait_until(lambda: second.delivered_seq == 15, 10, "the second forwarder's cursor")
    time.sleep(0.3)  # a late duplicate of 1..10 would have arrived by now
    assert sorted(sub.seqs()[n_before:]) == [11, 12, 13, 14, 15]


def test_stop_drains_what_was_queued(
    queue: EventQueue, broker: Broker, forwarders: Callable[..., MqttForwarder], collectors: Callable[..., Collector]
) -> None:
    sub = collectors(broker.port)
    fwd = forwarders(queue.path, _cfg(broker.port), window=10)
    fwd.start()
    wait_until(lambda: fwd.connected, 10, "the forwarder to connect")
    _append(queue, 0, 300)
    assert fwd.stop(timeout=30)
    assert fwd.delivered_seq == 300
    assert queue.get_cursor(fwd.cursor_name) == 300
    sub.wait_for(set(range(1, 301)), 20)


def test_refused_events_are_never_counted_as_delivered(
    queue: EventQueue, make_broker: Callable[..., Broker], forwarders: Callable[..., MqttForwarder], tmp_path: Path
) -> None:
    acl = tmp_path / "acl"
    acl.write_text(f"topic read {TOPIC}/#\ntopic write {TOPIC}/lobby\n")
    broker = make_broker(extra=f"acl_file {acl}")
    queue.append([make_event(0, camera="lobby"), make_event(1, camera="gate"), make_event(2, camera="lobby")])
    fwd = forwarders(queue.path, _cfg(broker.port))
    fwd.start()
    wait_until(lambda: fwd.last_error is not None and "refused" in fwd.last_error, 20, "the broker's refusal")
    time.sleep(0.5)
    # seq 1 went through; seq 2 (camera 'gate', not allowed) blocks the cursor: never skipped
    assert fwd.delivered_seq == 1
    assert queue.get_cursor(fwd.cursor_name) == 1
    assert "seq 2" in (fwd.last_error or "")


def test_username_and_password_file(
    queue: EventQueue, make_broker: Callable[..., Broker], forwarders: Callable[..., MqttForwarder], tmp_path: Path
) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not found")
    users = tmp_path / "users"
    subprocess.run([tool, "-c", "-b", str(users), "edge", "s3cret pass"], check=True, timeout=30)
    users.chmod(0o644)  # mosquitto may drop privileges before reading it
    broker = make_broker(extra=f"allow_anonymous false\npassword_file {users}")
    good = tmp_path / "good.pw"
    good.write_text("s3cret pass\n")
    good.chmod(0o600)
    bad = tmp_path / "bad.pw"
    bad.write_text("wrong\n")
    bad.chmod(0o600)
    _append(queue, 0, 5)

    denied = forwarders(queue.path, _cfg(broker.port, username="edge", password_file=bad))
    denied.start()
    wait_until(lambda: denied.last_error is not None, 20, "the broker to refuse the wrong password")
    assert "refused" in (denied.last_error or "") and not denied.connected
    assert denied.delivered_seq == 0

    allowed = forwarders(queue.path, _cfg(broker.port, username="edge", password_file=good))
    allowed.start()
    wait_until(lambda: allowed.delivered_seq == 5, 20, "delivery with the right password")
    assert denied.delivered_seq == 0


def test_configuration_errors(queue: EventQueue, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such event queue"):
        MqttForwarder(tmp_path / "missing.db", _cfg(1883))
    with pytest.raises(InputError, match="cannot read the MQTT password file"):
        MqttForwarder(queue.path, _cfg(1883, username="u", password_file=tmp_path / "nope"))
    pw = tmp_path / "pw"
    pw.write_text("x")
    with pytest.raises(InputError, match="username"):
        MqttForwarder(queue.path, _cfg(1883, password_file=pw))
    with pytest.raises(InputError, match="must not contain"):
        MqttForwarder(queue.path, MqttConfig(topic="edge-mtl/+/events"))


def test_unreachable_broker_keeps_events_queued(queue: EventQueue, forwarders: Callable[..., MqttForwarder]) -> None:
    from events_helpers import free_port

    _append(queue, 0, 3)
    fwd = forwarders(queue.path, _cfg(free_port()))
    fwd.start()
    wait_until(lambda: fwd.last_error is not None, 10, "a connection error")
    assert "Connection refused" in (fwd.last_error or "")
    assert fwd.delivered_seq == 0 and not fwd.connected
    assert fwd.stop(5)  # stops promptly while retrying


def test_missing_paho_names_the_extra(queue: EventQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    for mod in [m for m in sys.modules if m == "paho" or m.startswith("paho.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "paho", None)  # makes `import paho...` raise ImportError
    with pytest.raises(MissingExtraError, match=r"edge-mtl\[mqtt\]"):
        MqttForwarder(queue.path, _cfg(1883))


def test_damaged_queue_is_one_line_and_the_forwarder_keeps_trying(
    queue: EventQueue, broker: Broker, forwarders: Callable[..., MqttForwarder], caplog: pytest.LogCaptureFixture
) -> None:
    """A queue page damaged under a running forwarder: the events before it are delivered, then one warning naming
    the file (no traceback), and the thread keeps retrying until it is stopped."""
    from tests.faults.fault_helpers import corrupt_page

    _append(queue, 0, 400)
    queue.close()
    corrupt_page(queue.path)
    fwd = forwarders(queue.path, _cfg(broker.port), window=10)
    with caplog.at_level("DEBUG", logger="edge_mtl.events.mqtt"):
        fwd.start()
        wait_until(lambda: fwd.last_error is not None, 20, "the damaged page to be read")
        time.sleep(1.0)  # several retries at 0.1-0.5 s
        assert fwd.stop(10)
    assert f"{queue.path}: event queue is damaged" in (fwd.last_error or ""), fwd.last_error
    records = [r for r in caplog.records if r.name == "edge_mtl.events.mqtt" and r.levelname == "WARNING"]
    assert [r for r in records if "event queue is damaged" in r.getMessage()], [r.getMessage() for r in records]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert 0 < fwd.delivered_seq < 400


def test_replay_requests_resend_delivered_events_without_moving_the_cursor(
    queue: EventQueue, broker: Broker, forwarders: Callable[..., MqttForwarder], collectors: Callable[..., Collector],
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A box in a fleet listens on <control_topic>/<site>/<box>/replay: it resends the delivered events it still
    holds in the asked range (clamped to what it delivered; the oldest REPLAY_MAX_EVENTS of them it holds), logs
    what retention removed and answers it on <control_topic>/<site>/<box>/gone, ignores a request that is not one,
    and its cursor does not move."""
    import paho.mqtt.client as mqtt

    from edge_mtl.events import mqtt as fwd_mod

    monkeypatch.setattr(fwd_mod, "REPLAY_MAX_EVENTS", 2)

    evs = [make_event(i) for i in range(10)]
    for e in evs:
        e.box, e.site = "box-1", "hq"
    queue.append(evs)
    sub = collectors(broker.port)
    fwd = forwarders(queue.path, _cfg(broker.port), box="box-1", site="hq")
    assert fwd.replay_topic == "edge-mtl/control/hq/box-1/replay"
    assert forwarders(queue.path, _cfg(broker.port)).replay_topic is None  # not in a fleet: nobody asks it
    with caplog.at_level("INFO", logger="edge_mtl.events.mqtt"):
        fwd.start()
        wait_until(lambda: fwd.delivered_seq == 10 and fwd.listening and len(sub.seqs()) == 10, 20, "delivery")
        assert queue.prune(None, 8) == 2  # retention removed seq 1 and 2 on the box
        pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="asker")
        answers: list[tuple[str, dict[str, int]]] = []
        pub.on_message = lambda c, u, m: answers.append((m.topic, json.loads(m.payload)))
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        try:
            pub.subscribe(fwd.gone_topic, qos=1)
            time.sleep(0.3)
            for body in ["{not json", '{"from_seq": 0, "to_seq": 3}', '{"from_seq": 1, "to_seq": 4}',
                         '{"from_seq": 9, "to_seq": 500}', '{"from_seq": 11, "to_seq": 20}',
                         '{"from_seq": 1, "to_seq": 10}']:  # the last: its oldest two still held, 3 and 4
                pub.publish(fwd.replay_topic, body, qos=1).wait_for_publish(10)
            wait_until(lambda: len(sub.seqs()) >= 16 and fwd.replayed == 6 and len(answers) >= 2, 20,
                       "the resent events and the answers")
            time.sleep(0.5)  # nothing more comes
        finally:
            pub.disconnect()
            pub.loop_stop()
    assert fwd.gone_topic == "edge-mtl/control/hq/box-1/gone"
    # the two requests that reach below the oldest event held (seq 3) are answered; the others are not
    assert answers == [(fwd.gone_topic, {"from_seq": 1, "to_seq": 2, "first_seq": 3})] * 2
    assert sorted(sub.seqs()[10:]) == [3, 3, 4, 4, 9, 10] and len(sub.seqs()) == 16
    assert fwd.delivered_seq == 10 and queue.get_cursor(fwd.cursor_name) == 10
    said = [r.getMessage() for r in caplog.records if r.name == "edge_mtl.events.mqtt"]
    assert any("replay request ignored: not JSON" in m for m in said), said
    assert any("replay request ignored: bad range 0..3" in m for m in said), said
    assert any("events 1..2 are no longer on this box" in m for m in said), said
    assert any("asks for seq 9..10 again" in m for m in said), said  # 500 clamped to what was delivered


def test_a_refused_answer_is_logged_once_and_never_blocks_events(
    queue: EventQueue, make_broker: Callable[..., Broker], forwarders: Callable[..., MqttForwarder],
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker whose ACL lets the box take replay requests but not answer on its gone topic: the refusal of the
    answer is logged once, is not taken for a refused event (no reconnect, no retry), and events keep flowing."""
    import paho.mqtt.client as mqtt

    replay = "edge-mtl/control/hq/box-1/replay"
    acl = tmp_path / "acl"
    acl.write_text(f"topic readwrite {TOPIC}/#\ntopic readwrite {replay}\n")
    broker = make_broker(extra=f"acl_file {acl}")
    evs = [make_event(i) for i in range(10)]
    for e in evs:
        e.box, e.site = "box-1", "hq"
    queue.append(evs)
    fwd = forwarders(queue.path, _cfg(broker.port), box="box-1", site="hq")
    with caplog.at_level("INFO", logger="edge_mtl.events.mqtt"):
        fwd.start()
        wait_until(lambda: fwd.delivered_seq == 10 and fwd.listening, 20, "delivery")
        assert queue.prune(None, 8) == 2  # seq 1 and 2 are no longer on the box
        pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="asker2")
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        try:
            for _ in range(2):
                pub.publish(replay, '{"from_seq": 1, "to_seq": 10}', qos=1).wait_for_publish(10)
            wait_until(lambda: fwd.replayed == 16, 20, "the held events resent twice")
        finally:
            pub.disconnect()
            pub.loop_stop()
        e = make_event(10)
        e.box, e.site = "box-1", "hq"
        queue.append([e])
        wait_until(lambda: fwd.delivered_seq == 11, 20, "a later event delivered")
    said = [r.getMessage() for r in caplog.records if r.name == "edge_mtl.events.mqtt"]
    assert sum("told the collector that seq 1..2" in m for m in said) == 2, said
    refused = [m for m in said if "refused this box's answer on edge-mtl/control/hq/box-1/gone" in m]
    assert len(refused) == 1, said
    assert fwd.last_error is None and fwd.connected  # never taken for a refused event
