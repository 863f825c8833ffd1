"""End to end through `edge-mtl run` with an [[forwarders]] mqtt config: a broker that is down for a while
receives every event once it is back, including the face.left events written while stopping."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import EVENTFUL, Daemon, queue_len, queue_rows, wait_until

from tests.events.events_helpers import Broker, Collector, free_port, mosquitto_path

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'edge-mtl[mqtt]')")
pytestmark = pytest.mark.timeout(240)
TOPIC = "site1/events"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    binary = mosquitto_path()
    if binary is None:
        pytest.skip("mosquitto binary not found (apt-get install mosquitto)")
    d = tmp_path / "broker"
    d.mkdir()
    b = Broker(binary, d, free_port(), persistence=True)  # keeps the subscriber's session across the outage
    b.start()
    yield b
    b.stop()


def test_broker_outage_then_every_event_arrives(
    tmp_path: Path, model_args: list[str], clips: dict[str, Path], broker: Broker
) -> None:
    client = f"edge-mtl-{uuid.uuid4().hex[:8]}"
    sub = Collector(broker.port, TOPIC, client_id=f"dash-{client}", persistent=True)
    try:
        broker.stop()  # the outage starts before the daemon does
        cfg = tmp_path / "run.toml"
        cfg.write_text(
            EVENTFUL
            + f'\n[[forwarders]]\ntype = "mqtt"\nhost = "127.0.0.1"\nport = {broker.port}\ntopic = "{TOPIC}"\n'
            f'client_id = "{client}"\nqos = 1\n'
            + "\n[service]\nstop_timeout_s = 15.0\n"
        )
        db = tmp_path / "events.db"
        cursor = f"mqtt:{client}"
        with Daemon(["--config", str(cfg), "--source", str(clips["noise"]), "--loop", "--camera", "hall",
                     "--events", str(db), *model_args]) as d:
            wait_until(lambda: queue_len(db) >= 80, 90, "80 events while the broker is down")
            d.wait_log(r"MQTT 127\.0\.0\.1:\d+: .*retrying", 30)
            from edge_mtl.events.queue import EventQueue

            with EventQueue(db, create=False) as q:
                assert q.get_cursor(cursor) == 0, "nothing can have been delivered yet"
            broker.start()  # the outage ends
            t_up = time.monotonic()
            backlog = {s for s, _ in queue_rows(db)}
            sub.wait_for(backlog, timeout=60)
            caught_up = time.monotonic() - t_up
            d.signal(signal.SIGTERM)
            assert d.wait(40) == 0, d.stderr[-3000:]
        rows = queue_rows(db)
        everything = {s for s, _ in rows}
        sub.wait_for(everything, timeout=30)  # including what was written while stopping
        with EventQueue(db, create=False) as q:
            assert q.get_cursor(cursor) == rows[-1][0], "the forwarder's cursor did not reach the last event"
        events = {int(ev["seq"]): (topic, ev) for topic, ev in sub.messages}  # type: ignore[call-overload]
        for seq, body in rows:
            topic, ev = events[seq]
            assert topic == f"{TOPIC}/hall" and ev == json.loads(body)
        assert any(ev["type"] == "face.left" for _, ev in events.values())
        assert caught_up < 60
    finally:
        sub.close()
