"""One gallery for the fleet: published once, signed, retained on the broker; every box verifies and applies it.

The message (`edge-mtl gallery publish`, QoS 1, retained on `fleet.gallery.topic`) is one header line and the
gallery:

    {"alg": "HMAC-SHA256", "key_id": "<16 hex>", "sig": "<64 hex>"}\\n
    {"schema": "edge_mtl.gallery/v1", "version": 1765000000000, "recognizer": "<version>", "dim": 128,
     "published": "<ts>", "people": [{"name": "alice", "embeddings": ["<base64 float32>", ...]}, ...]}

The signature is HMAC-SHA256 over the gallery bytes with the fleet's shared key (a file every box and the
enrolment station hold; `key_id` names the key without revealing it). A shared secret means any holder of the
key can publish: keep it on the boxes and the enrolment station only (docs/fleet.md).

A box (`GallerySync`) applies a message only if its key id and signature match its own key (compared in constant
time), the recognizer that made the embeddings is the one it runs or one that recognizer declares compatible, and
the version is newer than the one it runs. Otherwise it logs one line saying why and keeps its gallery. Applying
is atomic: a new SQLite file is written beside the gallery, fsynced and renamed over it, and only then does the
daemon's main loop swap its matcher (`take_swap`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_mtl.config import BrokerConfig, FleetGalleryConfig
from edge_mtl.errors import InputError
from edge_mtl.events.schema import utc_ts
from edge_mtl.fleet.broker import make_client
from edge_mtl.identity.gallery import Gallery

log = logging.getLogger(__name__)

GALLERY_SCHEMA = "edge_mtl.gallery/v1"
ALG = "HMAC-SHA256"
MIN_KEY_BYTES = 32
_MAX_NAME = 256


def read_key(path: Path) -> bytes:
    """The fleet key: the file's bytes (a trailing newline dropped), at least MIN_KEY_BYTES of them."""
    try:
        key = Path(path).read_bytes().rstrip(b"\r\n")
    except OSError as e:
        raise InputError(f"{path}: cannot read the fleet key: {e.strerror or e}") from None
    if len(key) < MIN_KEY_BYTES:
        raise InputError(f"{path}: the fleet key is {len(key)} bytes, needs at least {MIN_KEY_BYTES} "
                         "(e.g. head -c 32 /dev/urandom | base64 > KEYFILE)")
    if os.stat(path).st_mode & 0o077:
        log.warning("%s: fleet key file is readable by other users (chmod 600 it)", path)
    return key


def key_id(key: bytes) -> str:
    """A short public name of a key (not reversible to it)."""
    return hashlib.sha256(b"edge-mtl fleet key id\0" + key).hexdigest()[:16]


def sign(payload: bytes, key: bytes) -> bytes:
    """The message: the signature header line, then `payload`."""
    sig = hmac.new(key, payload, hashlib.sha256).hexdigest()
    header = json.dumps({"alg": ALG, "key_id": key_id(key), "sig": sig}, separators=(",", ":"))
    return header.encode() + b"\n" + payload


class RefusedError(Exception):
    """A gallery message this box does not apply; the message says why."""


def verify(message: bytes, key: bytes) -> bytes:
    """The payload of a message signed with `key`; RefusedError otherwise."""
    header, sep, payload = bytes(message).partition(b"\n")
    try:
        h = json.loads(header) if sep else None
    except ValueError:
        h = None
    if not isinstance(h, dict) or h.get("alg") != ALG or not isinstance(h.get("sig"), str):
        raise RefusedError(f"not a signed edge-mtl gallery message (expected a {ALG} header line)")
    mine = key_id(key)
    if h.get("key_id") != mine:
        theirs = str(h.get("key_id"))[:16]
        raise RefusedError(f"signed with another key (key id {theirs!r}, this box's key is {mine!r})")
    want = hmac.new(key, payload, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want.encode(), h["sig"].encode("utf-8", "replace")):
        raise RefusedError("signature does not verify (altered in transit, or signed with another key)")
    return payload


def encode_gallery(version: int, recognizer: str, people: Mapping[str, np.ndarray[Any, Any]]) -> bytes:
    """The gallery payload: every person's embeddings (N x D float32, unit norm) of recognizer `recognizer`."""
    dims = {int(e.shape[1]) for e in people.values()}
    if len(dims) > 1:
        raise InputError(f"gallery publish: embeddings of several dimensions {sorted(dims)}")
    body = {
        "schema": GALLERY_SCHEMA,
        "version": int(version),
        "recognizer": recognizer,
        "dim": dims.pop() if dims else 0,
        "published": utc_ts(time.time()),
        "people": [
            {"name": name, "embeddings": [base64.b64encode(np.asarray(r, "<f4").tobytes()).decode() for r in emb]}
            for name, emb in sorted(people.items())
        ],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_gallery(payload: bytes) -> tuple[int, str, dict[str, np.ndarray[Any, Any]]]:
    """(version, recognizer, {name: N x D float32}) of a gallery payload; RefusedError with the reason if malformed."""
    try:
        d = json.loads(payload)
    except ValueError as e:
        raise RefusedError(f"gallery is not JSON: {e}") from None
    if not isinstance(d, dict) or d.get("schema") != GALLERY_SCHEMA:
        raise RefusedError(f"not an {GALLERY_SCHEMA} gallery")
    version, rec, dim, people = d.get("version"), d.get("recognizer"), d.get("dim"), d.get("people")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RefusedError("version: expected a positive integer")
    if not isinstance(rec, str) or not rec:
        raise RefusedError("recognizer: expected the recognizer version")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim <= 65536 or not isinstance(people, list):
        raise RefusedError("dim and people: expected an integer and a list")
    out: dict[str, np.ndarray[Any, Any]] = {}
    for i, p in enumerate(people):
        name = p.get("name") if isinstance(p, dict) else None
        embs = p.get("embeddings") if isinstance(p, dict) else None
        if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME or name in out:
            raise RefusedError(f"people[{i}]: expected a unique non-empty name of at most {_MAX_NAME} characters")
        if not isinstance(embs, list) or not embs:
            raise RefusedError(f"people[{i}] ({name}): expected a list of embeddings")
        try:
            rows = [np.frombuffer(base64.b64decode(e, validate=True), "<f4") for e in embs]
        except (binascii.Error, TypeError, ValueError) as e:
            raise RefusedError(f"people[{i}] ({name}): embedding is not base64 float32: {e}") from None
        if any(r.shape != (dim,) or not np.isfinite(r).all() for r in rows):
            raise RefusedError(f"people[{i}] ({name}): expected finite {dim}-d embeddings")
        out[name] = np.stack(rows).astype(np.float32)
    return version, rec, out


def publish_gallery(
    gallery: Path,
    key_file: Path,
    broker: BrokerConfig,
    topic: str,
    version: int | None = None,
    recognizer: str | None = None,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """`edge-mtl gallery publish`: sign `gallery`'s embeddings of `recognizer` (default: the one version it holds)
    and publish them retained (QoS 1); returns what was published once the broker acknowledged it."""
    key = read_key(key_file)
    with Gallery(gallery, create=False) as g:
        versions = sorted({m for p in g.people() for m in p["models"]})
        if recognizer is None:
            if len(versions) != 1:
                raise InputError(f"gallery publish: {gallery} holds embeddings of recognizers {versions or 'none'}; "
                                 "name one with --recognizer-version")
            recognizer = versions[0]
        names, _, mat = g.rows(recognizer)
    people: dict[str, np.ndarray[Any, Any]] = {}
    for name in sorted(set(names)):
        people[name] = mat[[i for i, n in enumerate(names) if n == name]]
    if not people:
        log.warning("gallery publish: no embeddings of recognizer %s in %s: publishing an empty gallery (every box "
                    "forgets everyone)", recognizer, gallery)
    version = int(version if version is not None else time.time() * 1000)
    message = sign(encode_gallery(version, recognizer, people), key)
    client = make_client(broker, f"edge-mtl-publish-{os.getpid()}")
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except OSError as e:
        raise InputError(f"gallery publish: cannot reach MQTT {broker.host}:{broker.port}: {e}") from None
    client.loop_start()
    try:
        info = client.publish(topic, message, qos=1, retain=True)
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise InputError(f"gallery publish: MQTT {broker.host}:{broker.port} did not acknowledge within "
                             f"{timeout_s:g} s")
    finally:
        client.disconnect()
        client.loop_stop()
    result = {"version": version, "recognizer": recognizer, "people": len(people),
              "embeddings": int(sum(len(e) for e in people.values())), "bytes": len(message), "topic": topic,
              "key_id": key_id(key)}
    log.info("published gallery version %d (%d people, recognizer %s) to %s", version, len(people), recognizer, topic)
    return result


class GallerySync:
    """A box's side: subscribes to the fleet gallery, verifies, checks and applies it (see the module doc)."""

    def __init__(self, cfg: FleetGalleryConfig, gallery: Path, recognizer: str,
                 compatible: Mapping[str, float] | None = None, box: str | None = None) -> None:
        self.cfg = cfg
        self.path = Path(gallery)
        self.recognizer = recognizer
        self.compatible = dict(compatible or {})
        self.key = read_key(cfg.key_file)
        self._lock = threading.Lock()
        self._swap = False
        self.version: int | None = None
        self.gallery_recognizer: str | None = None
        self.people: int | None = None
        self.refused = 0
        self.last_refusal: str | None = None
        self._read_running()
        self._client: Any = None
        self._client_id = f"edge-mtl-gallery-{box or os.getpid()}"

    def _read_running(self) -> None:
        if not self.path.exists():
            return
        try:
            with Gallery(self.path, create=False) as g:
                meta = dict(g.db.execute("SELECT key, value FROM meta WHERE key LIKE 'fleet_%'").fetchall())
                self.people = len(g.people())
        except InputError as e:
            log.warning("fleet gallery: cannot read %s: %s", self.path, e)
            return
        if "fleet_version" in meta:
            self.version = int(meta["fleet_version"])
            self.gallery_recognizer = meta.get("fleet_recognizer")
            log.info("fleet gallery: running version %d from %s", self.version, self.path)

    # -- broker ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        c = make_client(self.cfg, self._client_id)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.connect_async(self.cfg.host, self.cfg.port, keepalive=30)
        c.loop_start()
        self._client = c

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("fleet gallery: MQTT %s:%d refused the connection: %s", self.cfg.host, self.cfg.port, reason)
            return
        client.subscribe(self.cfg.topic, qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            self.apply(bytes(msg.payload))
        except Exception:  # never let paho's thread die on a bug: the box keeps its gallery
            log.exception("fleet gallery: applying the message on %s failed; keeping the running gallery", msg.topic)

    # -- applying ----------------------------------------------------------------------------------------------
    def apply(self, message: bytes) -> bool:
        """Verify, check and install a gallery message; True if it was put in place (the daemon swaps at its next
        `take_swap`). A refusal is logged (one line, with the reason) and counted; the gallery is kept."""
        try:
            version, rec, people = decode_gallery(verify(message, self.key))
            if rec != self.recognizer and rec not in self.compatible:
                raise RefusedError(f"made with recognizer {rec}, this box runs {self.recognizer}"
                              + (f" (compatible: {', '.join(self.compatible)})" if self.compatible else "")
                              + "; enrol again with the fleet's recognizer and publish")
            if self.version is not None and version <= self.version:
                if version == self.version:
                    log.debug("fleet gallery: version %d is the one running", version)
                    return False
                raise RefusedError(f"version {version} is older than the running {self.version}")
        except RefusedError as e:
            with self._lock:
                self.refused += 1
                self.last_refusal = str(e)
            log.error("fleet gallery refused: %s; keeping gallery version %s", e,
                      self.version if self.version is not None else "(none)")
            return False
        self._install(version, rec, people)
        with self._lock:
            self.version, self.gallery_recognizer, self.people = version, rec, len(people)
            self._swap = True
        log.info("fleet gallery version %d applied: %d people, recognizer %s", version, len(people), rec)
        return True

    def _install(self, version: int, rec: str, people: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Write a new gallery file beside the running one, fsync it, rename it over (atomic)."""
        tmp = self.path.with_name(self.path.name + ".incoming")
        for p in (tmp, tmp.with_name(tmp.name + "-journal")):
            p.unlink(missing_ok=True)
        g = Gallery(tmp)
        try:
            g.db.execute("PRAGMA synchronous=OFF")  # one fsync of the whole file below instead of one per person
            for name, emb in people.items():
                g.add(name, emb, model=rec)
            with g.db:
                g.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                    ("fleet_version", str(version)), ("fleet_recognizer", rec), ("fleet_key_id", key_id(self.key))])
        finally:
            g.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def take_swap(self) -> bool:
        """True once after a new gallery file was put in place: the caller reloads its matcher now."""
        with self._lock:
            swap, self._swap = self._swap, False
        return swap

    def state(self) -> dict[str, Any]:
        """For /metrics and /health."""
        with self._lock:
            return {"version": self.version, "recognizer": self.gallery_recognizer, "people": self.people,
                    "refused": self.refused, "last_refusal": self.last_refusal}


def start_gallery_sync(cfg: Any, recognizer_meta: Any) -> GallerySync:
    """The daemon's hook: a started GallerySync for `cfg.fleet.gallery` into `cfg.identity.gallery`."""
    sync = GallerySync(cfg.fleet.gallery, Path(cfg.identity.gallery), recognizer_meta.version,
                       getattr(recognizer_meta, "compatible", None) or {}, cfg.fleet.box)
    sync.start()
    return sync
