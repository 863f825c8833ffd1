"""A real HTTP client for the daemon's API (urllib and http.client), and the daemon's own config for these tests."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from tests.proc_helpers import REPO

TOKEN = "t0k3n-" + "5f1c9a7e2b4d6f80" * 2
PEDESTRIANS = "videos/pedestrians_1080p.mp4"


def shipped_model_args() -> list[str]:
    folder = Path(os.environ.get("EDGE_MTL_TEST_MODELS") or REPO / "export")
    return ["--detector", str(folder / "detector.onnx"), "--recognizer", str(folder / "recognizer.onnx")]


def write_token(path: Path, token: str = TOKEN) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return path


def daemon_config(path: Path, state: Path, port: int | None, token_file: Path | None, *, api: bool = True,
                  gallery: Path | None = None, extra: str = "") -> Path:
    # tracks end 5 frames after their last sighting: face.left events come within seconds on the looping clip
    lines = ["[tracker]", "lost_frames = 5", "", "[events]", f'db = "{state / "events.db"}"', "snapshots = true",
             "snapshot_context = true", ""]
    if gallery is not None:
        lines += ["[identity]", f'gallery = "{gallery}"', "min_observations = 1", ""]
    if port is not None:
        lines += ["[service]", f"metrics_port = {port}", ""]
    if api:
        lines += ["[api]", "enabled = true", f'token_file = "{token_file}"', ""]
    path.write_text("\n".join(lines) + extra)
    return path


class Client:
    """GETs against the daemon: (status, headers, body bytes); `token=None` sends no Authorization header."""

    def __init__(self, port: int, token: str | None = TOKEN) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.port = port
        self.token = token

    def get(self, path: str, token: str | bool | None = True, headers: dict[str, str] | None = None,
            timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        h = dict(headers or {})
        tok = self.token if token is True else token
        if isinstance(tok, str):
            h["Authorization"] = f"Bearer {tok}"
        req = Request(self.base + path, headers=h)
        try:
            with urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, path: str, expect: int = 200, **kw: Any) -> Any:
        code, _, body = self.get(path, **kw)
        assert code == expect, f"GET {path}: {code} {body[:300]!r}"
        return json.loads(body)

    def all_events(self, query: str = "", page: int = 50) -> list[dict[str, Any]]:
        """Every event matching `query`, following the API's `next` links."""
        out: list[dict[str, Any]] = []
        path: str | None = f"/api/events?limit={page}" + (f"&{query}" if query else "")
        while path:
            data = self.json(path)
            out += data["events"]
            path = data["next"]
        return out


class SseReader:
    """One Server-Sent Events connection (http.client): `next_events(n)` reads n events; `close()` drops it."""

    def __init__(self, port: int, path: str = "/api/stream", last_event_id: int | None = None,
                 token: str = TOKEN, timeout: float = 30.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.conn.request("GET", path, headers=headers)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.content_type = self.resp.getheader("Content-Type", "")

    def next_events(self, n: int) -> list[tuple[int, dict[str, Any]]]:
        """The next `n` events with data as (id, event); id-only blocks (skipped by a filter) are not counted."""
        out: list[tuple[int, dict[str, Any]]] = []
        ident, data = None, ""
        while len(out) < n:
            line = self.resp.readline()
            assert line, "stream ended"
            text = line.decode().rstrip("\n")
            if text.startswith("id:"):
                ident = int(text[3:].strip())
            elif text.startswith("data:"):
                data += text[5:].strip()
            elif text == "":
                if data:
                    assert ident is not None, "an event without id"
                    out.append((ident, json.loads(data)))
                ident, data = None, ""
        return out

    def close(self) -> None:
        self.resp.close()
        self.conn.close()
