"""MQTT forwarder: delivers the durable queue to a broker, one message per event, without loss (docs/events.md).

How "never lose an event" is kept:

* The forwarder's progress is a cursor in the queue database (`mqtt:<client_id>` unless named otherwise). It
  advances only past events the broker has acknowledged (PUBACK for QoS 1, PUBCOMP for QoS 2), and only over a
  contiguous prefix, so a crash, a restart or an outage resumes at the first unacknowledged event.
* Each connection uses a fresh paho client and a clean session. When a connection is lost, every event sent on
  it but not acknowledged is simply sent again on the next one, from the cursor: the forwarder owns
  retransmission instead of relying on a broker-side session (which a restarted broker without persistence
  forgets anyway). The price is at-least-once delivery: after an outage the broker may see a few events
  twice, and subscribers de-duplicate by `seq` (or `id`). QoS 2 does not change that across reconnects.
* MQTT 5 is used so that a broker that refuses a publish (e.g. not authorised) says so in its PUBACK; such a
  refusal is never counted as delivered: the forwarder reconnects and retries with growing backoff.
* QoS 0 has no acknowledgement: events count as delivered once written to the socket (at-most-once).

Resending on request (automatic backfill, docs/fleet.md): a box in a fleet (`fleet.box`) listens on
`<control_topic>/[site/]<box>/replay` for `{"from_seq": A, "to_seq": B}` from the fleet's collector, which asks for
the events it never got (a broker dropped them, or they were published before its session existed). The forwarder
publishes those of them it still holds and has delivered already, beside the live ones and after them, without
touching its cursor; the collector stores each event once whatever it receives twice. The part of a range that its
retention has removed it names on `<control_topic>/[site/]<box>/gone`, and the collector gives that part up.

Subscribers that must not miss events while *they* are offline need a persistent session of their own
(clean_start=False with a session expiry, QoS >= 1) on a broker with persistence; that is the subscriber's and
the broker's configuration, not the forwarder's.

The network loop is driven from the forwarder's own thread (select + paho's loop_read/loop_write/loop_misc),
so there is exactly one thread per forwarder, it polls its stop event, and every wait is bounded.
"""

from __future__ import annotations

import json
import logging
import os
import select
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_mtl.config import MqttForwarder as MqttConfig
from edge_mtl.errors import InputError, MissingExtraError
from edge_mtl.events.dbfaults import StorageError, db_guard
from edge_mtl.events.queue import EventQueue
from edge_mtl.threads import name_this_thread

if TYPE_CHECKING:
    import paho.mqtt.client as paho

log = logging.getLogger(__name__)


def _import_paho() -> Any:
    """paho-mqtt >= 2.0, imported only when a forwarder is created (it is an optional extra)."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise MissingExtraError("paho-mqtt", "mqtt") from None
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise InputError("paho-mqtt is older than 2.0: pip install --upgrade 'edge-mtl[mqtt]'")
    return mqtt


def _read_password(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the MQTT password file: {e}") from None
    if os.stat(path).st_mode & 0o077:
        log.warning("%s: MQTT password file is readable by other users (chmod 600 it)", path)
    return text.rstrip("\r\n")


def event_topic(base: str, event: dict[str, Any]) -> str:
    """`<base>/<camera>`, or `<base>[/<site>]/<box>/<camera>` for an event of a box in a fleet (docs/fleet.md)."""
    levels = [event[k] for k in ("site", "box") if event.get(k)]
    return "/".join([base, *levels, event["camera"]])


#: At most this many events resent for one request, the oldest of the range the box still holds (a larger gap is
#: asked for again as it narrows), and at most this many requests waiting: a flood of requests cannot make a box
#: resend its whole queue over and over.
REPLAY_MAX_EVENTS = 10_000
REPLAY_MAX_PENDING = 16


def box_control_topic(control_topic: str, box: str, site: str | None, leaf: str) -> str:
    """`<control_topic>/[site/]<box>/<leaf>`: one box's topic of the fleet's control tree."""
    return "/".join([control_topic.rstrip("/"), *([site] if site else []), box, leaf])


def replay_topic(control_topic: str, box: str, site: str | None) -> str:
    """`<control_topic>/[site/]<box>/replay`: where the collector asks one box to resend events."""
    return box_control_topic(control_topic, box, site, "replay")


def gone_topic(control_topic: str, box: str, site: str | None) -> str:
    """`<control_topic>/[site/]<box>/gone`: where a box answers that part of a requested range is no longer on it
    (its retention removed those events), so the collector gives that part up at once instead of asking again."""
    return box_control_topic(control_topic, box, site, "gone")


def parse_replay(payload: bytes) -> tuple[int, int]:
    """(from_seq, to_seq) of a replay request; ValueError with a short reason when it is not one."""
    try:
        req = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not JSON") from None
    if not isinstance(req, dict):
        raise ValueError("not a JSON object")
    a, b = req.get("from_seq"), req.get("to_seq")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (a, b)):
        raise ValueError("from_seq and to_seq must be integers")
    assert isinstance(a, int) and isinstance(b, int)
    if a < 1 or b < a:
        raise ValueError(f"bad range {a}..{b}")
    return a, b


def check_mqtt_config(cfg: MqttConfig) -> str | None:
    """What a forwarder needs before it starts (`edge-mtl check-config` runs it too): the password file readable,
    a username beside it, a topic without wildcards. Returns the password (None: no password_file)."""
    password = _read_password(cfg.password_file) if cfg.password_file is not None else None
    if password is not None and cfg.username is None:
        raise InputError("MQTT forwarder: password_file is set but username is not")
    for what, topic in (("topic", cfg.topic), ("control_topic", cfg.control_topic)):
        if any(c in topic for c in "+#\0"):
            raise InputError(f"MQTT forwarder: {what} {topic!r} must not contain '+', '#' or NUL")
    return password


class _Link:
    """What paho's callbacks report about one connection (they run in the forwarder's thread)."""

    def __init__(self) -> None:
        self.connack: Any = None
        self.receive_max: int | None = None
        self.lost: str | None = None
        self.acked: list[int] = []
        self.rejected: list[tuple[int, str]] = []
        self.replays: list[tuple[int, int]] = []  # resend requests received (from_seq, to_seq)
        self.subscribed = False
        self.subscribe_refused: str | None = None

    def on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connack = reason
        rm = getattr(properties, "ReceiveMaximum", None)
        self.receive_max = int(rm) if rm else None

    def on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.lost = str(reason)

    def on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            self.rejected.append((mid, str(reason)))
        else:
            self.acked.append(mid)

    def on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        bad = [r for r in reasons if getattr(r, "is_failure", False)]
        if bad:
            self.subscribe_refused = str(bad[0])
        else:
            self.subscribed = True

    def on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            self.replays.append(parse_replay(bytes(msg.payload)))
        except ValueError as e:
            log.warning("MQTT %s: replay request ignored: %s", msg.topic, e)


class _LinkDownError(Exception):
    """A connection ended (lost, refused, timed out); the message says why."""


class _RefusedError(_LinkDownError):
    """The broker is up but refused an event (e.g. not authorised for the topic): retried, never skipped."""


class MqttForwarder:
    """A thread that publishes every queued event to `<cfg.topic>/<camera>` (`event_topic`: with the box's site and
    box before the camera when fleet.box is set) and commits what the broker acked.

    `cursor_name` names the progress kept in the queue (default `mqtt:<client_id>`). A new forwarder starts
    at the oldest event still stored. The queue must exist (the pipeline creates it): InputError otherwise.
    `cfg.cursor` is not used: progress lives in the queue database, where it commits atomically.
    `box` and `site` (the box's `fleet.box` and `fleet.site`) name the topic it takes replay requests on when
    `cfg.replay` is set (none without a box).
    """

    def __init__(
        self,
        queue_path: str | os.PathLike[str],
        cfg: MqttConfig,
        cursor_name: str | None = None,
        *,
        window: int = 100,
        keepalive_s: int = 30,
        connect_timeout_s: float = 10.0,
        ack_timeout_s: float = 60.0,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        poll_s: float = 0.2,
        box: str | None = None,
        site: str | None = None,
    ) -> None:
        self._mqtt = _import_paho()
        self.cfg = cfg
        self.queue_path = Path(queue_path)
        self.cursor_name = cursor_name or f"mqtt:{cfg.client_id}"
        self._password = check_mqtt_config(cfg)
        if cfg.cursor is not None:
            log.warning("MQTT forwarder: 'cursor' = %s is ignored; progress is kept in %s", cfg.cursor, queue_path)
        if cfg.qos == 0:
            log.warning("MQTT forwarder %s: qos 0 has no acknowledgement; events can be lost", cfg.client_id)
        self._window = max(1, int(window))
        self._keepalive = int(keepalive_s)
        self._connect_timeout = float(connect_timeout_s)
        self._ack_timeout = float(ack_timeout_s)
        self._backoff_min = float(reconnect_min_s)
        self._backoff_max = max(float(reconnect_max_s), self._backoff_min)
        self._poll = float(poll_s)
        self._queue = EventQueue(self.queue_path, create=False)
        self._delivered = self._queue.get_cursor(self.cursor_name)
        self.replay_topic = replay_topic(cfg.control_topic, box, site) if cfg.replay and box else None
        self.gone_topic = gone_topic(cfg.control_topic, box, site) if cfg.replay and box else None
        self._gone: deque[tuple[int, int, int]] = deque()  # (from, to, first held) to answer as no longer held
        self._gone_mids: set[int] = set()  # answers in flight (an acknowledgement or refusal moves nothing)
        self._replays: deque[list[int]] = deque()  # [next seq, last seq, events left] to resend, oldest first
        self._replay_mids: set[int] = set()  # in-flight resends (their acknowledgements move no cursor)
        self.replayed = 0  # events resent on request and acknowledged by the broker
        self._stop = threading.Event()
        self._drain_deadline = 0.0
        self._connected = threading.Event()
        self._listening = threading.Event()  # subscribed to replay_topic on the current connection
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    # -- public ----------------------------------------------------------------------------------------------

    @property
    def delivered_seq(self) -> int:
        """The last seq acknowledged by the broker and committed to the queue (contiguous up to here)."""
        return self._delivered

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def listening(self) -> bool:
        """True while the broker has confirmed the subscription to `replay_topic` on the current connection."""
        return self._listening.is_set()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("MqttForwarder.start: already started (create a new forwarder to restart)")
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.cfg.client_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Deliver what was queued before this call (for up to ~80% of `timeout` if connected), disconnect and
        join the thread; True if it ended. Events not acknowledged by then are sent by the next forwarder."""
        self._drain_deadline = time.monotonic() + max(0.0, 0.8 * timeout)
        self._stop.set()
        if self._thread is None:
            self._queue.close()
            return True
        self._thread.join(timeout)
        ended = not self._thread.is_alive()
        if ended:
            self._queue.close()
        else:
            log.warning("MQTT forwarder %s did not stop within %.1f s", self.cfg.client_id, timeout)
        return ended

    # -- thread ----------------------------------------------------------------------------------------------

    def _run(self) -> None:
        name_this_thread("mqtt")
        backoff = self._backoff_min
        down_since: float | None = None  # when the broker became unreachable (not: when it refused an event)
        logged: str | None = None  # the last problem logged as a warning (repeats go to debug)
        try:
            while not self._stop.is_set():
                link = _Link()
                client = None
                acked_before = self._delivered
                started = time.monotonic()
                try:
                    client = self._connect(link)
                    if down_since is not None:
                        log.info(
                            "MQTT %s:%d reachable again after %.1f s; sending from seq %d",
                            self.cfg.host,
                            self.cfg.port,
                            time.monotonic() - down_since,
                            self._delivered + 1,
                        )
                        down_since = None
                    self._connected.set()
                    self._session(client, link)
                    return  # stopped
                except (_LinkDownError, OSError) as e:
                    if self._stop.is_set():
                        return
                    self.last_error = str(e) if isinstance(e, _LinkDownError) else f"{type(e).__name__}: {e}"
                    if not isinstance(e, _RefusedError) and down_since is None:
                        down_since = time.monotonic()
                    if self.last_error != logged:
                        log.warning(
                            "MQTT %s:%d: %s; retrying (undelivered events stay queued)",
                            self.cfg.host,
                            self.cfg.port,
                            self.last_error,
                        )
                        logged = self.last_error
                    else:
                        log.debug("MQTT %s:%d: %s", self.cfg.host, self.cfg.port, self.last_error)
                except StorageError as e:  # the queue damaged or full: one line, and try again after the pause
                    if self._stop.is_set():
                        return
                    self.last_error = str(e)
                    if self.last_error != logged:
                        log.warning("MQTT forwarder %s: %s; retrying", self.cfg.client_id, self.last_error)
                        logged = self.last_error
                except Exception as e:  # a bug or an odd paho error: keep forwarding, but loudly
                    self.last_error = f"{type(e).__name__}: {e}"
                    log.exception("MQTT forwarder %s: unexpected error", self.cfg.client_id)
                finally:
                    self._connected.clear()
                    self._listening.clear()
                    if client is not None:
                        self._close(client)
                # A healthy session (something delivered, or up for a while) resets the backoff; a broker that
                # accepts connections and then drops or refuses everything gets ever longer pauses.
                if self._delivered > acked_before or time.monotonic() - started > 30.0:
                    backoff = self._backoff_min
                    logged = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._backoff_max)
        finally:
            self._connected.clear()

    def _connect(self, link: _Link) -> paho.Client:
        mqtt = self._mqtt
        v5 = self.cfg.protocol == "5"
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.cfg.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        client.on_connect = link.on_connect
        client.on_disconnect = link.on_disconnect
        client.on_publish = link.on_publish
        client.on_subscribe = link.on_subscribe
        client.on_message = link.on_message
        client.connect_timeout = self._connect_timeout
        client.max_inflight_messages_set(self._window)
        if self.cfg.username is not None:
            client.username_pw_set(self.cfg.username, self._password)
        if self.cfg.tls:
            client.tls_set()
        try:
            if v5:
                client.connect(self.cfg.host, self.cfg.port, keepalive=self._keepalive, clean_start=True)
            else:  # 3.1.1 has no clean_start: the session is clean by `clean_session` above
                client.connect(self.cfg.host, self.cfg.port, keepalive=self._keepalive)
            deadline = time.monotonic() + self._connect_timeout
            while link.connack is None:
                if self._stop.is_set():
                    raise _LinkDownError("stopped while connecting")
                if time.monotonic() > deadline:
                    raise _LinkDownError(f"no CONNACK within {self._connect_timeout:g} s")
                try:
                    self._pump(client, link, 0.1)
                except _LinkDownError:
                    if link.connack is None:
                        raise  # a refusing broker closes the link right after its CONNACK: report the CONNACK
        except BaseException:
            self._close(client)
            raise
        if getattr(link.connack, "is_failure", False):
            self._close(client)
            raise _LinkDownError(f"broker refused the connection: {link.connack}")
        if self.replay_topic is not None:  # the SUBACK and the requests come in through _pump
            client.subscribe(self.replay_topic, qos=1)
        return client

    def _pump(self, client: paho.Client, link: _Link, timeout: float) -> None:
        """One round of network I/O (paho's external-loop API); raises _LinkDownError when the link is gone."""
        mqtt = self._mqtt
        sock = client.socket()
        if sock is None or link.lost is not None:
            raise _LinkDownError(f"connection lost ({link.lost or 'socket closed'})")
        pending = getattr(sock, "pending", None)
        if callable(pending) and pending() > 0:  # TLS: decrypted bytes waiting, select would not see them
            timeout = 0.0
        try:
            readable, writable, _ = select.select([sock], [sock] if client.want_write() else [], [], timeout)
        except (OSError, ValueError) as e:
            raise _LinkDownError(f"connection lost ({e})") from None
        rcs = []
        if readable or (callable(pending) and pending() > 0):
            rcs.append(client.loop_read())
        if writable and client.socket() is not None:
            rcs.append(client.loop_write())
        if client.socket() is not None:
            rcs.append(client.loop_misc())
        bad = [rc for rc in rcs if rc != mqtt.MQTT_ERR_SUCCESS]
        if bad or link.lost is not None or client.socket() is None:
            why = link.lost or (mqtt.error_string(bad[0]) if bad else "socket closed")
            raise _LinkDownError(f"connection lost ({why})")

    def _close(self, client: paho.Client) -> None:
        """Say goodbye if still connected and release the socket (the client object is discarded)."""
        try:
            if client.socket() is not None:
                client.disconnect()
        except (OSError, ValueError) as e:
            log.debug("MQTT disconnect: %s", e)
        sock = client.socket()
        if sock is not None:
            sock.close()

    def _session(self, client: paho.Client, link: _Link) -> None:
        """Publish from the cursor, commit acknowledged prefixes; returns when stopped, raises when lost."""
        with db_guard(self._queue.path, "event queue"):
            self._session_loop(client, link)

    def _session_loop(self, client: paho.Client, link: _Link) -> None:
        q = self._queue
        window = min(self._window, link.receive_max or self._window)
        inflight: dict[int, tuple[int, float]] = {}  # mid -> (seq, sent at)
        order: deque[int] = deque()  # seqs sent, ascending
        done: set[int] = set()  # acknowledged seqs not yet part of the committed prefix
        next_seq = self._delivered + 1
        drain_to: int | None = None
        topic = self.cfg.topic.rstrip("/")
        self._replay_mids.clear()  # resends in flight on an earlier connection are gone with it
        self._gone_mids.clear()  # (an answer lost with them is given again when the collector asks again)
        refusal_logged = answer_refusal_logged = False
        while True:
            if self._stop.is_set():
                if drain_to is None:
                    drain_to = q.last_seq()
                if self._delivered >= drain_to or (not order and next_seq > drain_to):
                    return
                if time.monotonic() >= self._drain_deadline:
                    log.warning("MQTT forwarder stopping with events after seq %d undelivered", self._delivered)
                    return
            room = window - len(inflight)
            rows: list[tuple[int, str]] = []
            if room > 0 and (drain_to is None or next_seq <= drain_to):
                rows = q.read_raw(next_seq, room)
                if drain_to is not None:
                    rows = [r for r in rows if r[0] <= drain_to]
                if rows and rows[0][0] > next_seq and next_seq > 1:
                    log.warning("MQTT: events %d..%d were pruned before delivery", next_seq, rows[0][0] - 1)
            now = time.monotonic()
            for seq, body in rows:
                inflight[self._publish(client, topic, body)] = (seq, now)
                order.append(seq)
                next_seq = seq + 1
            resent = 0 if self._stop.is_set() else self._resend(client, topic, window - len(inflight), inflight, now)
            try:
                self._pump(client, link, 0.0 if rows or resent else self._poll)
            finally:  # acknowledgements that arrived just before a disconnect still count
                for mid in link.acked:
                    entry = inflight.pop(mid, None)
                    if mid in self._gone_mids:
                        self._gone_mids.discard(mid)
                    elif mid in self._replay_mids:  # a resend: the broker has it again, no cursor moves
                        self._replay_mids.discard(mid)
                        self.replayed += 1
                    elif entry is not None:
                        done.add(entry[0])
                link.acked.clear()
                advanced = False
                while order and order[0] in done:
                    seq = order.popleft()
                    done.discard(seq)
                    self._delivered = seq
                    advanced = True
                if advanced:
                    q.set_cursor(self.cursor_name, self._delivered)
            self._take_replays(link)
            self._answer_gone(client)
            if link.subscribed:
                self._listening.set()
            if link.subscribe_refused and not refusal_logged:
                log.warning("MQTT %s:%d refused the subscription to %s (%s): the fleet's collector cannot ask this "
                            "box to resend events (broker ACL, docs/fleet.md)", self.cfg.host, self.cfg.port,
                            self.replay_topic, link.subscribe_refused)
                refusal_logged = True
            refused = [r for r in link.rejected if r[0] in self._gone_mids]  # answers, not events: never retried
            if refused:
                self._gone_mids.difference_update(mid for mid, _ in refused)
                link.rejected = [r for r in link.rejected if r not in refused]
                if not answer_refusal_logged:
                    log.warning("MQTT %s:%d refused this box's answer on %s (%s): the collector gives up events this "
                                "box no longer holds only after its backfill_give_up_s (broker ACL, docs/fleet.md)",
                                self.cfg.host, self.cfg.port, self.gone_topic, refused[0][1])
                    answer_refusal_logged = True
            if link.rejected:
                mid, why = link.rejected[0]
                seq = inflight.get(mid, (-1, 0.0))[0]
                raise _RefusedError(f"broker refused event seq {seq}: {why}")
            if inflight:
                oldest = min(t for _, t in inflight.values())
                if time.monotonic() - oldest > self._ack_timeout:
                    raise _LinkDownError(f"no acknowledgement within {self._ack_timeout:g} s")

    def _publish(self, client: paho.Client, topic: str, body: str) -> int:
        """Publish one event (its JSON text) on its topic; the message id, or _LinkDownError."""
        info = client.publish(event_topic(topic, json.loads(body)), body, qos=self.cfg.qos)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            raise _LinkDownError(f"publish failed: {self._mqtt.error_string(info.rc)}")
        return int(info.mid)

    def _take_replays(self, link: _Link) -> None:
        """Queue the replay requests that came in: only events delivered already (later ones are on their way),
        the oldest REPLAY_MAX_EVENTS of each request that this box still holds (a range whose start retention has
        removed still gets the rest), at most REPLAY_MAX_PENDING requests waiting. The part of a request below the
        oldest event still held is answered on `gone_topic` (`_answer_gone`)."""
        first = self._queue.first_seq() if link.replays else 0
        for a, b in link.replays:
            if a < first and self.gone_topic is not None:
                self._gone.append((a, min(b, first - 1), first))
            last = min(b, self._delivered)
            if last < a:
                log.debug("MQTT: replay of seq %d..%d asked for, none delivered yet", a, b)
            elif len(self._replays) >= REPLAY_MAX_PENDING:
                log.warning("MQTT: replay of seq %d..%d ignored: %d requests are waiting", a, b, len(self._replays))
            else:
                log.info("MQTT: the collector asks for seq %d..%d again; resending", a, last)
                self._replays.append([a, last, REPLAY_MAX_EVENTS])
        link.replays.clear()

    def _answer_gone(self, client: paho.Client) -> None:
        """Tell the collector which requested events this box no longer holds: `{"from_seq", "to_seq",
        "first_seq"}` (QoS 1) on `gone_topic`, so that it gives them up at once."""
        while self._gone and self.gone_topic is not None:
            a, b, first = self._gone[0]
            body = json.dumps({"from_seq": a, "to_seq": b, "first_seq": first})
            info = client.publish(self.gone_topic, body, qos=1)
            if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                raise _LinkDownError(f"publish failed: {self._mqtt.error_string(info.rc)}")
            self._gone.popleft()
            self._gone_mids.add(int(info.mid))
            log.info("MQTT: told the collector that seq %d..%d are no longer on this box (its oldest is %d)", a, b,
                     first)

    def _resend(self, client: paho.Client, topic: str, room: int, inflight: dict[int, tuple[int, float]],
                now: float) -> int:
        """Publish up to `room` events of the oldest replay requests; returns how many were sent."""
        sent = 0
        while room > sent and self._replays:
            r = self._replays[0]
            rows = [x for x in self._queue.read_raw(r[0], min(room - sent, r[1] - r[0] + 1, r[2])) if x[0] <= r[1]]
            if not rows or rows[0][0] > r[0]:
                log.warning("MQTT: replay: events %d..%d are no longer on this box (retention)", r[0],
                            rows[0][0] - 1 if rows else r[1])
            for seq, body in rows:
                mid = self._publish(client, topic, body)
                inflight[mid] = (seq, now)
                self._replay_mids.add(mid)
                sent += 1
            r[0] = rows[-1][0] + 1 if rows else r[1] + 1
            r[2] -= len(rows)
            if r[0] > r[1] or r[2] <= 0:
                self._replays.popleft()
        return sent
