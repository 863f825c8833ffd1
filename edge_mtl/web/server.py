"""The daemon's HTTP server (aiohttp, its own event loop in one daemon thread): /metrics and /health always, and
with `api.enabled` the local events API and the live page (docs/dashboards.md).

Never in the way of frame processing: the main loop hands over a `Snapshot` (plain numbers) once a second through
`publish`; every other answer comes from the queue and gallery files through read-only SQLite connections of two
worker threads (WAL readers never wait for the writer, nor it for them) and from the snapshot files. Nothing here
takes a lock or touches an object the pipeline uses.

Routes (all GET):

* `/metrics`, `/health`: as before (edge_mtl.daemon.metrics renders them);
* `/api/events`: events by `after_seq` / `before_seq`, `since` / `until` (capture time), `camera`, `type`,
  `identity` (a name) or `unknown=1`, `limit` (<= 1000), `order=asc|desc`; paged through `next`;
* `/api/events/{seq or id}`: one event and the state of its snapshot;
* `/api/events/{seq or id}/snapshot?kind=face|context`: the JPEG; 404 (no snapshot) or 410 (deleted) with a reason;
* `/api/stream`: Server-Sent Events, one per event (`id:` is its seq); resumes after `Last-Event-ID` (or
  `?after_seq=`); same filters as /api/events;
* `/api/cameras`: cameras and their state; `/api/gallery`: enrolled names and enrolment counts;
* `/`, `/app.js`: the live page (static; it asks for the token and sends it with every API request).

With a token configured, /api/... always needs `Authorization: Bearer <token>` (401 otherwise); /metrics and
/health need it too when the server listens on a non-loopback address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from edge_mtl.config import AppConfig
from edge_mtl.daemon.metrics import CONTENT_TYPE_PROMETHEUS, Snapshot, health_body, render_prometheus
from edge_mtl.errors import InputError
from edge_mtl.events.snapshots import (
    KINDS,
    SnapshotStore,
    ensure_queue_indexes,
    is_key,
    snapshot_folder,
    snapshot_state,
)
from edge_mtl.threads import name_this_thread
from edge_mtl.web.auth import is_loopback, token_matches
from edge_mtl.web.store import MAX_LIMIT, EventFilter, QueryError, ReadStore, int_param

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_S = 0.2  # how often the stream looks for new events (one query for all clients)
KEEPALIVE_S = 15.0
STATIC = ("index.html", "app.js")
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, separators=(",", ":")) + "\n", status=status,
                        content_type="application/json", headers={"Cache-Control": "no-store"})


def _error(status: int, msg: str) -> web.Response:
    return _json({"error": msg}, status)


class WebServer:
    """/metrics, /health and (with api.enabled) the API and page on service.metrics_host:metrics_port."""

    def __init__(self, cfg: AppConfig, token: str | None) -> None:
        svc = cfg.service
        assert svc.metrics_port is not None
        self.host, self.port = svc.metrics_host, svc.metrics_port
        self.token = token
        self.api = cfg.api.enabled
        self.loopback = is_loopback(self.host)
        self.snapshot_dir = snapshot_folder(cfg.events)
        self.store = ReadStore(Path(cfg.events.db), cfg.identity.gallery)
        self._lock = threading.Lock()
        self._snapshot = Snapshot(time=time.time())
        self._thread: threading.Thread | None = None
        self._loop = asyncio.new_event_loop()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="api-db")
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._last_seq = 0
        self._changed: asyncio.Event | None = None
        self._poller: asyncio.Task[None] | None = None
        self._static: dict[str, bytes] = {}
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((self.host, self.port))
            self._sock.listen(128)
        except OSError as e:
            self._sock.close()
            raise InputError(f"service.metrics_port: cannot listen on {self.host}:{self.port}: "
                             f"{e.strerror or e}") from None
        self._sock.setblocking(False)
        self.port = int(self._sock.getsockname()[1])
        if self.api:
            ensure_queue_indexes(cfg.events.db)  # look-ups by event id (the daemon opened the queue already)
            pkg = resources.files("edge_mtl.web") / "static"
            self._static = {name: (pkg / name).read_bytes() for name in STATIC}

    # -- the main thread's side ----------------------------------------------------------------------------
    def publish(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def latest(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def start(self) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            name_this_thread("http")
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._setup())
            except BaseException as e:  # reported to start()
                errors.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="http", daemon=True)
        self._thread.start()
        ready.wait(10.0)
        if errors:
            raise errors[0]
        log.info("HTTP on http://%s:%d: /metrics, /health%s", self.host, self.port,
                 ", /api and the live page at /" if self.api else "")

    def stop(self, timeout: float = 2.0) -> None:
        if self._thread is not None:
            self._stopping = True
            try:
                fut = asyncio.run_coroutine_threadsafe(self._teardown(), self._loop)
                fut.result(timeout)
            except Exception as e:  # still stop the loop
                log.debug("HTTP teardown: %s", e)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            self._thread = None
        if not self._loop.is_running():
            self._loop.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()
        self._sock.close()

    # -- setup -------------------------------------------------------------------------------------------------
    async def _setup(self) -> None:
        app = web.Application(middlewares=[self._auth], client_max_size=4096)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        if self.api:
            app.router.add_get("/", self._page)
            app.router.add_get("/app.js", self._page)
            app.router.add_get("/favicon.ico", self._no_icon)
            app.router.add_get("/api/events", self._events)
            app.router.add_get("/api/events/{ref}", self._event)
            app.router.add_get("/api/events/{ref}/snapshot", self._snapshot_file)
            app.router.add_get("/api/stream", self._stream)
            app.router.add_get("/api/cameras", self._cameras)
            app.router.add_get("/api/gallery", self._gallery)
            self._changed = asyncio.Event()
            self._last_seq = await self._db(self.store.last_seq)
            self._poller = self._loop.create_task(self._poll())
        else:
            app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def _teardown(self) -> None:
        if self._changed is not None:
            self._changed.set()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._runner is not None:
            await self._runner.cleanup()

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._loop.run_in_executor(self._pool, fn, *args)

    async def _poll(self) -> None:
        """One query for all stream clients: wake them when the queue's last seq moves."""
        while not self._stopping:
            try:
                seq = await self._db(self.store.last_seq)
            except Exception as e:  # a locked or vanished file: try again
                log.debug("stream poll: %s", e)
                seq = self._last_seq
            if seq != self._last_seq and self._changed is not None:
                self._last_seq = seq
                self._changed.set()
                self._changed = asyncio.Event()
            await asyncio.sleep(POLL_S)

    # -- middleware ----------------------------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        path = request.path
        protected = path.startswith("/api/") if self.api else False
        if not self.loopback and path in ("/metrics", "/health"):
            protected = True
        if protected and not (self.token and token_matches(request.headers.get("Authorization"), self.token)):
            resp = _error(401, "missing or wrong bearer token (Authorization: Bearer <api token>)")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="edge-mtl"'
            return resp
        try:
            return await handler(request)
        except QueryError as e:
            return _error(400, str(e))

    # -- metrics and health --------------------------------------------------------------------------------------
    async def _metrics(self, request: web.Request) -> web.Response:
        body = render_prometheus(self.latest()).encode()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PROMETHEUS, "Cache-Control": "no-store"})

    async def _health(self, request: web.Request) -> web.Response:
        code, body = health_body(self.latest())
        return _json(body, code)

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.Response(text="not found: try /metrics or /health\n", status=404)

    # -- page ------------------------------------------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.Response:
        name = "index.html" if request.path == "/" else request.path.lstrip("/")
        ctype = "text/html" if name.endswith(".html") else "text/javascript"
        return web.Response(body=self._static[name], content_type=ctype, charset="utf-8", headers=PAGE_HEADERS)

    async def _no_icon(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})

    # -- events ------------------------------------------------------------------------------------------------------
    async def _events(self, request: web.Request) -> web.Response:
        q = request.query
        f = EventFilter.parse(q)
        limit = int_param(q, "limit", 100, 1, MAX_LIMIT)
        after, before = int_param(q, "after_seq", None), int_param(q, "before_seq", None)
        order = q.get("order", "asc")
        if order not in ("asc", "desc"):
            raise QueryError(f"order: expected asc or desc, got {order[:20]!r}")
        assert limit is not None
        last = await self._db(self.store.last_seq)  # before the query: a later event is in `rows` or after `last`
        rows = await self._db(self.store.events, f, after, before, limit, order == "desc")
        nxt = None
        if len(rows) == limit:
            more = f"after_seq={rows[-1]['seq']}" if order == "asc" else f"before_seq={rows[-1]['seq']}"
            if order == "asc" and before is not None:
                more += f"&before_seq={before}"
            if order == "desc" and after is not None:
                more += f"&after_seq={after}"
            fq = f.query_string()
            nxt = f"/api/events?{more}&limit={limit}&order={order}" + (f"&{fq}" if fq else "")
        return _json({"events": rows, "next": nxt, "last_seq": last})

    def _snapshot_info(self, ev: dict[str, Any]) -> dict[str, Any]:
        key = ev.get("snapshot")
        ref = ev["id"]
        out: dict[str, Any] = {"state": snapshot_state(self.snapshot_dir, key, "face")}
        if out["state"] == "present":
            out["face"] = f"/api/events/{ref}/snapshot"
            if snapshot_state(self.snapshot_dir, key, "context") == "present":
                out["context"] = f"/api/events/{ref}/snapshot?kind=context"
        return out

    async def _event(self, request: web.Request) -> web.Response:
        ev = await self._db(self.store.event, request.match_info["ref"])
        if ev is None:
            return _error(404, "no such event (never stored, or deleted by retention)")
        return _json({"event": ev, "snapshot": await self._db(self._snapshot_info, ev)})

    async def _snapshot_file(self, request: web.Request) -> web.StreamResponse:
        kind = request.query.get("kind", "face")
        if kind not in KINDS:
            raise QueryError(f"kind: expected one of {list(KINDS)}, got {kind[:20]!r}")
        ev = await self._db(self.store.event, request.match_info["ref"])
        if ev is None:
            return _error(404, "no such event (never stored, or deleted by retention)")
        key = ev.get("snapshot")
        if not isinstance(key, str) or not is_key(key):
            return _json({"error": "this event has no snapshot (events.snapshots was off, or the face was never "
                          "seen well enough)", "state": "none"}, 404)
        path = self.snapshot_dir / SnapshotStore.relpath(key, kind)
        try:
            data = await self._db(path.read_bytes)
        except FileNotFoundError:
            what = "context frame" if kind == "context" else "snapshot"
            return _json({"error": f"the {what} of this event is missing: deleted by events.snapshot_max_mb or "
                          "snapshot_retention_days, by hand, or never taken", "state": "missing"}, 410)
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store",
                                                                           "X-Content-Type-Options": "nosniff"})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        f = EventFilter.parse(request.query)
        resume = request.headers.get("Last-Event-ID")
        if resume is not None and not resume.strip().isdigit():
            raise QueryError(f"Last-Event-ID: expected the seq of the last event received, got {resume[:40]!r}")
        seq = int(resume) if resume is not None else int_param(request.query, "after_seq", None)
        if seq is None:
            # from now on: the queue's own last seq (the poller's copy can lag a commit behind under load, and an
            # event committed before this request is not new to this client)
            seq = await self._db(self.store.last_seq)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        try:
            await resp.write(b"retry: 1000\n\n")
            while not self._stopping:
                rows, last = await self._db(self.store.scan_after, seq, 500)
                if not rows and last > seq:  # deleted by retention before this client read them: move on
                    seq = last
                    await resp.write(f"id: {seq}\n\n".encode())
                    continue
                if rows:
                    parts = []
                    for ev in rows:
                        seq = int(ev["seq"])
                        if f.matches(ev):
                            parts.append(f"id: {seq}\ndata: {json.dumps(ev, separators=(',', ':'))}\n\n")
                    if not parts:  # nothing matched: move the client's Last-Event-ID on all the same
                        parts.append(f"id: {seq}\n\n")
                    await resp.write("".join(parts).encode())
                    continue
                changed = self._changed
                if changed is None:
                    return resp
                if self._last_seq > seq:
                    continue  # committed after that snapshot: read again
                try:
                    await asyncio.wait_for(changed.wait(), KEEPALIVE_S)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    # -- cameras and gallery -----------------------------------------------------------------------------------------
    async def _cameras(self, request: web.Request) -> web.Response:
        snap = self.latest()
        cams = [{"name": c.name, "kind": c.kind, "state": c.state, "connected": c.connected,
                 "fps": round(c.fps, 2), "frames": c.frames_processed, "faces": c.faces,
                 "dropped": c.frames_dropped,
                 "last_frame_age_s": None if c.last_frame_age_s is None else round(c.last_frame_age_s, 2),
                 "error": c.error} for c in snap.cameras]
        return _json({"status": snap.status, "cameras": cams, "time": snap.time})

    async def _gallery(self, request: web.Request) -> web.Response:
        people = await self._db(self.store.gallery)
        return _json({"configured": people is not None, "people": people or []})

