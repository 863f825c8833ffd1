"""`edge-mtl collect`: every box's events from the broker into PostgreSQL, at least once, stored exactly once.

How no event is lost between a box and the database:

* Boxes publish with QoS 1 and advance their queue cursor only on the broker's PUBACK (edge_mtl.events.mqtt).
* The collector has a persistent MQTT 5 session (fixed client id, clean_start False, a session expiry): while it
  is away, killed or restarting, the broker keeps its subscription and queues the events for it (a broker with
  persistence keeps them across its own restart too; docs/fleet.md says how to configure mosquitto for that).
* Messages are acknowledged manually, only after the transaction that stores them committed. A collector killed
  between the commit and the PUBACK gets those events again; the insert skips ids already stored
  (`ON CONFLICT (id) DO NOTHING`), so each event is stored exactly once.
* While the database is down the collector keeps the batch, retries with growing backoff and acknowledges
  nothing: the broker stops sending once `receive_maximum` events are unacknowledged and queues the rest.
* An acknowledgement is only sent on the connection the message came on; after a reconnect the broker resends
  what was not acknowledged (deduplicated as above).
* What the broker never carried (events published before the collector's session existed, or dropped by a
  broker): a named box numbers its events without holes, so the store records each hole in a box's `seq` as a
  gap (`EventStore.insert`), and the collector asks the box to resend it on the control topic
  (`edge_mtl.events.mqtt.replay_topic`), again with growing pauses while it does not narrow, until
  `backfill_give_up_s` (automatic backfill, docs/fleet.md), or until the box answers on its `gone` topic that its
  retention removed them.

Threads: paho's network thread (connect, reconnect with backoff, receive) hands messages to the main thread
through a queue; the main thread batches, writes, acknowledges, applies retention and logs each box's lag.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as PromCollector

from edge_mtl.daemon.metrics import CONTENT_TYPE_PROMETHEUS, check_loopback, exposition, metric_family
from edge_mtl.errors import InputError
from edge_mtl.events.mqtt import parse_replay, replay_topic
from edge_mtl.events.schema import decode_event
from edge_mtl.fleet.broker import make_client, properties
from edge_mtl.fleet.config import CollectorConfig
from edge_mtl.fleet.store import EventStore, db_error_text, import_psycopg, open_store, read_db_password, ts_epoch

log = logging.getLogger(__name__)

#: How often the collector looks for gaps that are due (at most; backfill_grace_s when shorter).
BACKFILL_CHECK_S = 5.0


@dataclass
class _Message:
    generation: int  # the connection it arrived on
    mid: int
    qos: int
    topic: str
    payload: bytes


@dataclass
class BoxStats:
    site: str | None = None
    last_seq: int = 0
    lag_s: float = 0.0  # commit time less the capture time of the newest event of the last batch
    stored: int = 0
    duplicates: int = 0
    committed_at: float = 0.0
    missing: int = 0  # events of its seq never stored, still asked for
    given_up: int = 0  # events of its seq never stored, no longer asked for


@dataclass
class CollectorStats:
    connected: bool = False
    subscribed: bool = False  # the broker confirmed the subscription (SUBACK) on the current connection
    db_up: bool = False
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    pruned: int = 0
    replay_requests: int = 0
    boxes: dict[str, BoxStats] = field(default_factory=dict)


class Collector:
    """One collector process. `run()` returns the exit code; `stop()` (or SIGTERM) ends it after the batch in hand."""

    def __init__(self, cfg: CollectorConfig) -> None:
        self.cfg = cfg
        self.psycopg = import_psycopg()
        self.stats = CollectorStats()
        self._lock = threading.Lock()
        self._inbox: queue.Queue[_Message] = queue.Queue()
        self._stop = threading.Event()
        self._generation = 0
        self._store: EventStore | None = None
        self._db_password = read_db_password(cfg.database)
        if cfg.metrics_port is not None:
            check_loopback(cfg.metrics_host)
        b = cfg.broker
        self._client = make_client(b, "edge-mtl-collector", manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._connect_props = properties(
            "CONNECT", SessionExpiryInterval=b.session_expiry_s, ReceiveMaximum=b.receive_maximum
        )
        self._http: ThreadingHTTPServer | None = None
        self._backfill_db_down = False  # the last gap check found the database down (warned once)
        self._control = b.control_topic.rstrip("/") + "/"  # boxes answer on <control>/[site/]<box>/gone

    # -- MQTT (paho's thread) ----------------------------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT %s:%d refused the collector: %s", self.cfg.broker.host, self.cfg.broker.port, reason)
            return
        with self._lock:
            self._generation += 1
            self.stats.connected = True
        present = bool(getattr(flags, "session_present", False))
        log.info("MQTT %s:%d connected (session %s); subscribing to %s/#", self.cfg.broker.host,
                 self.cfg.broker.port, "resumed" if present else "new", self.cfg.broker.topic)
        answers = [(f"{self._control}+/gone", 1), (f"{self._control}+/+/gone", 1)] if self.cfg.backfill else []
        client.subscribe([(f"{self.cfg.broker.topic}/#", 1), *answers])

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        first, answers = (list(reasons) or [None])[0], list(reasons)[1:]
        if getattr(first, "is_failure", False):
            log.error("MQTT %s:%d refused the subscription to %s/#: %s", self.cfg.broker.host, self.cfg.broker.port,
                      self.cfg.broker.topic, first)
            return
        bad = [r for r in answers if getattr(r, "is_failure", False)]
        if bad:  # events still flow; a range a box no longer holds is given up after backfill_give_up_s instead
            log.warning("MQTT %s:%d refused the subscription to %s+/gone (%s): events a box no longer holds are "
                        "given up only after backfill_give_up_s (broker ACL, docs/fleet.md)", self.cfg.broker.host,
                        self.cfg.broker.port, self._control, bad[0])
        with self._lock:
            self.stats.subscribed = True

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._lock:
            was = self.stats.connected
            self.stats.connected = self.stats.subscribed = False
        if was and not self._stop.is_set():
            log.warning("MQTT %s:%d: connection lost (%s); reconnecting (the broker keeps the session)",
                        self.cfg.broker.host, self.cfg.broker.port, reason)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            gen = self._generation
        self._inbox.put(_Message(gen, int(msg.mid), int(msg.qos), str(msg.topic), bytes(msg.payload)))

    # -- database ----------------------------------------------------------------------------------------------
    def _db(self) -> EventStore:
        if self._store is None:
            self._store = open_store(self.cfg.database, self._db_password, "edge-mtl collect")
            self._store.gap_grace_s = self.cfg.backfill_grace_s
            self.stats.db_up = True
        return self._store

    def _open_store_at_start(self) -> None:
        """Create the schema before subscribing, so that whoever queries the store once the collector runs (a
        dashboard, a test) finds its tables; a database down now is retried when the first events arrive."""
        try:
            self._db()
        except self.psycopg.Error as e:
            self._db_down()
            log.warning("PostgreSQL not reachable at start: %s; retrying when events arrive", db_error_text(e))

    def _db_down(self) -> None:
        self.stats.db_up = False
        if self._store is not None:
            with suppress(Exception):
                self._store.conn.close()
            self._store = None

    # -- main loop ---------------------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping after the batch in hand", signal.Signals(signum).name)
        self._stop.set()

    def run(self) -> int:
        handlers: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                handlers[signum] = signal.signal(signum, self._on_signal)
        try:
            self._start_metrics()
            self._open_store_at_start()
            b = self.cfg.broker
            self._client.connect_async(b.host, b.port, keepalive=30, clean_start=False,
                                       properties=self._connect_props)
            self._client.loop_start()
            log.info("collecting %s/# from %s:%d into %s (schema %s)", b.topic, b.host, b.port,
                     _safe_dsn(self.cfg.database.dsn), self.cfg.database.db_schema)
            self._loop()
        finally:
            with suppress(Exception):
                self._client.disconnect()
            with suppress(Exception):
                self._client.loop_stop()
            self._db_down()
            if self._http is not None:
                self._http.shutdown()
                self._http.server_close()
            for old_sig, h in handlers.items():
                signal.signal(old_sig, h)
            s = self.stats
            log.info("collector stopped: %d received, %d stored, %d duplicates skipped, %d rejected",
                     s.received, s.stored, s.duplicates, s.rejected)
        return 0

    def _loop(self) -> None:
        last_prune = -float("inf")
        last_lag = last_backfill = time.monotonic()
        while not self._stop.is_set():
            batch = self._next_batch()
            if batch:
                self._write(batch)
            now = time.monotonic()
            if self.cfg.backfill and now - last_backfill >= min(BACKFILL_CHECK_S, self.cfg.backfill_grace_s):
                self._backfill()
                last_backfill = now
            if now - last_prune >= self.cfg.retention_interval_s:
                self._prune()  # (a database that is down now: retried at the next interval)
                last_prune = now
            if now - last_lag >= self.cfg.lag_log_interval_s:
                self._log_lag()
                last_lag = now

    def _next_batch(self) -> list[_Message]:
        """Up to batch_size messages: waits up to batch_wait_s for the first, then takes what else is there
        within batch_wait_s."""
        out: list[_Message] = []
        deadline = time.monotonic() + self.cfg.batch_wait_s
        while len(out) < self.cfg.batch_size and not self._stop.is_set():
            left = deadline - time.monotonic()
            try:
                out.append(self._inbox.get(timeout=max(0.0, left)) if left > 0 else self._inbox.get_nowait())
            except queue.Empty:
                break
        return out

    def _gone_box(self, topic: str) -> tuple[str, str | None] | None:
        """(box, site) when `topic` is a box's answer `<control>/[site/]<box>/gone`, else None."""
        if not topic.startswith(self._control) or not topic.endswith("/gone"):
            return None
        parts = topic[len(self._control):].split("/")[:-1]
        return (parts[-1], parts[0] if len(parts) == 2 else None) if len(parts) in (1, 2) else None

    def _take_answers(self, answers: list[tuple[_Message, tuple[str, str | None]]]) -> None:
        """Boxes' answers that part of a requested range is no longer on them: given up now (`gone_from_box`).
        A database down now loses the answer, which the box gives again when asked again."""
        for m, (box, site) in answers:
            name = _box_name(box, site)
            try:
                a, b = parse_replay(m.payload)
            except ValueError as e:
                log.warning("topic %s: answer ignored: %s", m.topic, e)
                continue
            try:
                given = self._db().gone_from_box(box, a, b)
            except self.psycopg.Error as e:
                self._db_down()
                log.warning("PostgreSQL: box %s's answer (seq %d..%d no longer on it) not applied now: %s", name, a,
                            b, db_error_text(e))
                continue
            for x, y in given:
                log.error("box %s: events %d..%d are no longer on the box (its retention removed them): given up "
                          "(its JSON-lines log may still hold them: edge-mtl collect --import)", name, x, y)

    def _write(self, batch: list[_Message]) -> None:
        """Store a batch (retrying through database outages), then acknowledge it; boxes' answers among it are
        applied in between (`_take_answers`)."""
        answers: list[tuple[_Message, tuple[str, str | None]]] = []
        events: list[_Message] = []
        for m in batch:
            who = self._gone_box(m.topic)
            if who is None:
                events.append(m)
            else:
                answers.append((m, who))
        if answers:
            self._take_answers(answers)
        good: list[tuple[dict[str, Any], str]] = []
        for m in events:
            try:  # decode_event takes the bytes and words any failure (UTF-8 included) on one line
                ev = decode_event(m.payload)
            except ValueError as e:  # never storable, so acknowledged and counted
                self.stats.rejected += 1
                log.error("topic %s: message rejected (not stored): %s", m.topic, str(e)[:300])
                continue
            good.append((ev, m.payload.decode("utf-8")))
        self.stats.received += len(events)
        marks = self._insert_until_stored(good) if good else {}
        if marks is None:
            return  # stopped before the database took it: not acknowledged, the broker sends it again
        now = time.time()
        with self._lock:
            gen = self._generation
            for box, mk in marks.items():
                bs = self.stats.boxes.setdefault(box, BoxStats())
                bs.site, bs.last_seq = mk.site, max(bs.last_seq, mk.last_seq)
                bs.lag_s = max(0.0, now - ts_epoch(mk.last_ts))
                bs.stored += mk.stored
                bs.committed_at = now
            stored = sum(mk.stored for mk in marks.values())
            self.stats.stored += stored
            self.stats.duplicates += len(good) - stored
            self.stats.batches += 1
        stale = 0
        for m in batch:
            if m.generation == gen and m.qos > 0:
                self._client.ack(m.mid, m.qos)
            elif m.qos > 0:
                stale += 1
        if stale:
            log.debug("%d message(s) arrived on an earlier connection: not acknowledged, the broker resends them",
                      stale)

    def _insert_until_stored(self, good: list[tuple[dict[str, Any], str]]) -> dict[str, Any] | None:
        backoff, down_since, logged = 0.5, None, False
        while not self._stop.is_set():
            try:
                marks = self._db().insert(good)
                if down_since is not None:
                    log.info("PostgreSQL reachable again after %.1f s", time.monotonic() - down_since)
                return marks
            except self.psycopg.Error as e:
                self._db_down()
                down_since = down_since or time.monotonic()
                (log.debug if logged else log.warning)("PostgreSQL: %s; retrying in %.1f s (%d events held, none "
                                                       "acknowledged)", db_error_text(e), backoff, len(good))
                logged = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.cfg.database.reconnect_max_s)
        return None

    def _backfill(self) -> None:
        """Ask the boxes for the gaps that are due; give up the ones that have not narrowed for too long."""
        cfg = self.cfg
        try:
            store = self._db()
            for gap in store.due_gaps():
                name = _box_name(gap.box, gap.site)
                if gap.stalled_s >= cfg.backfill_give_up_s:
                    store.give_up_gap(gap)
                    log.error("box %s: events %d..%d never arrived and the box did not resend them in %.0f s: given "
                              "up (if the box still holds them: edge-mtl collect --import its queue or log)", name,
                              gap.from_seq, gap.to_seq, gap.stalled_s)
                    continue
                if not self.stats.connected:
                    break
                payload = json.dumps({"from_seq": gap.from_seq, "to_seq": gap.to_seq})
                info = self._client.publish(replay_topic(cfg.broker.control_topic, gap.box, gap.site), payload,
                                            qos=1)
                if info.rc != 0:
                    break  # not connected after all: asked again at the next check
                store.gap_requested(gap, min(cfg.backfill_retry_max_s, cfg.backfill_retry_s * 2.0 ** gap.requests))
                with self._lock:
                    self.stats.replay_requests += 1
                (log.info if gap.requests == 0 else log.warning)(
                    "box %s: events %d..%d never arrived; asked the box to resend them (request %d)", name,
                    gap.from_seq, gap.to_seq, gap.requests + 1)
            missing = store.missing()
        except self.psycopg.Error as e:  # one warning per outage (the next batch's retries say the rest)
            self._db_down()
            (log.debug if self._backfill_db_down else log.warning)("PostgreSQL: backfill not checked now: %s",
                                                                   db_error_text(e))
            self._backfill_db_down = True
            return
        self._backfill_db_down = False
        with self._lock:
            for box, bs in self.stats.boxes.items():
                bs.missing, bs.given_up = missing.get(box, (0, 0))
            for box, (open_, gone) in missing.items():
                if box not in self.stats.boxes:  # a box with gaps from before this collector started
                    self.stats.boxes[box] = BoxStats(missing=open_, given_up=gone)

    def _prune(self) -> None:
        try:
            n = self._db().prune(self.cfg.retention_days * 86400.0)
        except self.psycopg.Error as e:
            self._db_down()
            log.warning("PostgreSQL: retention not applied now: %s", db_error_text(e))
            return
        if n:
            self.stats.pruned += n
            log.info("retention: deleted %d event(s) captured more than %g days ago", n, self.cfg.retention_days)

    def _log_lag(self) -> None:
        with self._lock:
            boxes = sorted(self.stats.boxes.items())
        if boxes:
            log.info("lag per box: %s", ", ".join(
                f"{_box_name(b, s.site)} {s.lag_s:.1f} s (seq {s.last_seq}, {s.stored} stored)" for b, s in boxes))

    # -- metrics -----------------------------------------------------------------------------------------------
    def render_metrics(self) -> str:
        """The collector's metrics in the Prometheus text format (prometheus-client, a registry of its own)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_CollectorMetrics(self))
        return exposition(registry).decode()

    def metric_families(self) -> list[Metric]:
        with self._lock:
            s = self.stats
            boxes = sorted(s.boxes.items())
            out: list[Metric] = []

            def fam(kind: str, name: str, help_text: str, rows: list[tuple[list[str], float]],
                    labels: tuple[str, ...] = ()) -> None:
                cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                out.append(metric_family(cls, name, help_text, rows, labels))

            fam("gauge", "edge_mtl_collector_broker_connected", "1 while connected to the broker.",
                [([], s.connected)])
            fam("gauge", "edge_mtl_collector_database_up", "1 while the database connection works.", [([], s.db_up)])
            fam("counter", "edge_mtl_collector_received_total", "Messages received.", [([], s.received)])
            fam("counter", "edge_mtl_collector_rejected_total", "Messages that are not events (not stored).",
                [([], s.rejected)])
            fam("counter", "edge_mtl_collector_batches_total", "Transactions committed.", [([], s.batches)])
            fam("counter", "edge_mtl_collector_pruned_total", "Events deleted by retention.", [([], s.pruned)])

            def per_box(attr: str) -> list[tuple[list[str], float]]:
                return [([b, st.site or ""], getattr(st, attr)) for b, st in boxes]

            box = ("box", "site")
            fam("counter", "edge_mtl_collector_stored_total", "Events stored, by box.", per_box("stored"), box)
            fam("gauge", "edge_mtl_collector_lag_seconds",
                "Commit time less the capture time of the newest event of the box's last batch.", per_box("lag_s"),
                box)
            fam("gauge", "edge_mtl_collector_last_seq", "Highest seq of the box stored.", per_box("last_seq"), box)
            fam("counter", "edge_mtl_collector_duplicates_total", "Redelivered events skipped (already stored).",
                [([], s.duplicates)])
            fam("gauge", "edge_mtl_collector_missing_events",
                "Events of the box's seq never stored and still asked for (automatic backfill).", per_box("missing"),
                box)
            fam("gauge", "edge_mtl_collector_given_up_events",
                "Events of the box's seq never stored and no longer asked for (backfill_give_up_s).",
                per_box("given_up"), box)
            fam("counter", "edge_mtl_collector_replay_requests_total", "Requests to boxes to resend missing events.",
                [([], s.replay_requests)])
        return out

    def _start_metrics(self) -> None:
        if self.cfg.metrics_port is None:
            return
        owner = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5.0

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    data, code, ctype = b"not found: try /metrics\n", 404, "text/plain; charset=utf-8"
                else:
                    data, code, ctype = owner.render_metrics().encode(), 200, CONTENT_TYPE_PROMETHEUS
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics: " + format, *args)

        try:
            self._http = ThreadingHTTPServer((self.cfg.metrics_host, self.cfg.metrics_port), Handler)
        except OSError as e:
            raise InputError(f"collector.metrics_port: cannot listen on {self.cfg.metrics_host}:"
                             f"{self.cfg.metrics_port}: {e.strerror or e}") from None
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, name="collector-metrics", daemon=True).start()
        log.info("collector metrics on http://%s:%d/metrics", self.cfg.metrics_host, self._http.server_address[1])


class _CollectorMetrics(PromCollector):
    def __init__(self, owner: Collector) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        yield from self._owner.metric_families()


def _box_name(box: str, site: str | None) -> str:
    return f"{site}/{box or '(unnamed)'}" if site else (box or "(unnamed)")


def _safe_dsn(dsn: str) -> str:
    """The connection string for a log line (it carries no password: config validation refuses one)."""
    return json.dumps(dsn)


def collect(cfg: CollectorConfig) -> int:
    """`edge-mtl collect`: run until SIGTERM/SIGINT; returns the exit code."""
    return Collector(cfg).run()
