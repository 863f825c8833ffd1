"""Helpers shared by the events tests: an event factory, bounded waits and a real mosquitto broker."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from edge_mtl.events.schema import utc_ts
from edge_mtl.types import Event
from tests.proc_helpers import wait_until as wait_until  # re-exported

EPOCH = 1_795_370_400.0  # 2026-11-22T18:00:00Z


def make_event(i: int = 0, camera: str = "lobby", type: str = "face.identified", **kw: object) -> Event:
    """A fully populated valid event (every optional field set), varied by `i`."""
    fields: dict[str, object] = {
        "type": type,
        "ts": utc_ts(EPOCH + i * 0.04),
        "camera": camera,
        "track_id": f"{camera}-{i % 7}",
        "frame": i,
        "identity": {"name": "alice", "similarity": 0.71},
        "age": {"years": 34.2, "std": 3.1},
        "gender": {"label": "female", "confidence": 0.96},
        "bbox": [10.0, 20.0, 64.0, 80.0],
        "quality": 0.83,
        "duration_s": 4.2,
    }
    fields.update(kw)
    return Event(**fields)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_path() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(p, os.X_OK):
            return p
    return None


class Broker:
    """A real mosquitto on 127.0.0.1:`port`, restartable on the same port (to simulate outages)."""

    def __init__(self, binary: str, workdir: Path, port: int, extra: str = "", persistence: bool = False) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port
        self.extra = extra
        self.persistence = persistence
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "mosquitto.log"

    def config(self) -> Path:
        lines = [f"listener {self.port} 127.0.0.1", "log_dest stderr", "log_type error", "log_type warning"]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise mosquitto drops to user 'mosquitto' and cannot use workdir
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/", "max_queued_messages 100000"]
        else:
            lines.append("persistence false")
        if "allow_anonymous" not in self.extra:
            lines.append("allow_anonymous true")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n" + self.extra + "\n")
        return conf

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None, "broker already running"
        conf = self.config()
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=logf, stderr=logf)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s") from None
                time.sleep(0.05)

    def freeze(self) -> None:
        """SIGSTOP: the broker keeps its sockets open but answers nothing (a hung broker or a dead link)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file on the way out), SIGKILL if it hangs."""
        if self.proc is None:
            return
        self.proc.terminate()
        self.proc.send_signal(signal.SIGCONT)  # in case it was frozen
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class Collector:
    """A real paho subscriber on `<topic>/#` that records (topic, decoded event) for every message.

    `persistent=True` uses a fixed client id with a persistent session (clean_session=False, QoS 1), so a broker
    with persistence keeps the subscription and queues messages while this subscriber is away.
    """

    def __init__(self, port: int, topic: str, client_id: str = "", persistent: bool = False) -> None:
        import threading

        import paho.mqtt.client as mqtt

        from edge_mtl.events.schema import decode_event

        self._decode = decode_event
        self.topic = topic
        self.lock = threading.Lock()
        self.messages: list[tuple[str, dict[str, object]]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not persistent,
            protocol=mqtt.MQTTv311,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        wait_until(self.subscribed.is_set, 10, "the subscriber's SUBACK")

    def _on_connect(self, client: object, userdata: object, flags: object, reason: object, props: object) -> None:
        self.client.subscribe(f"{self.topic}/#", qos=1)

    def _on_subscribe(self, client: object, userdata: object, mid: int, reasons: object, props: object) -> None:
        self.subscribed.set()

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        ev = self._decode(msg.payload)  # type: ignore[attr-defined]
        with self.lock:
            self.messages.append((msg.topic, ev))  # type: ignore[attr-defined]

    def seqs(self) -> list[int]:
        with self.lock:
            return [int(ev["seq"]) for _, ev in self.messages]  # type: ignore[call-overload]

    def wait_for(self, seqs: set[int], timeout: float) -> None:
        wait_until(lambda: seqs <= set(self.seqs()), timeout, f"events {min(seqs)}..{max(seqs)} at the subscriber")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
