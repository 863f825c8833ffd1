"""The daemon's view of the gallery file: follow changes, and let a damaged file cost identification only.

`GalleryWatch.poll()` runs in the daemon's main loop (at most every `interval_s`). It reloads the matcher when
the gallery changed (an enrolment or removal by another process, or a new file renamed over the old one) and
checks the file with SQLite's `quick_check` on every reload. When the file cannot be used (damaged while the
daemon runs, truncated, overwritten, removed, unreadable), the daemon keeps matching against the **last good
gallery** held in memory: detection, tracking, attributes and events go on. The problem is logged once when it
starts and once when it ends (not at every retry), and shown in /health (status `degraded`, a problem line) and
in /metrics (`edge_mtl_gallery_ok 0`, `edge_mtl_gallery_errors_total`). The file is retried every `interval_s`;
once it is fixed or replaced, the new gallery is loaded and the problem clears, without a restart.

At start-up a damaged gallery does not stop the daemon either: it starts with no one enrolled (everyone
unknown) and the same degraded health, and picks the gallery up once it is readable. Only a gallery that can
never match this recognizer (its embeddings have another size) refuses to start (exit 2): that is a
configuration mistake, not damage.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path

from edge_mtl.errors import InputError
from edge_mtl.identity.gallery import Gallery, Matcher
from edge_mtl.identity.scorenorm import ScoreNorm

log = logging.getLogger(__name__)


class GalleryDimensionError(InputError):
    """The gallery's embeddings have another size than the recognizer's: it can never match (exit 2 at start)."""


class GalleryWatch:
    """Keeps `matcher` in step with the gallery at `path`; see the module doc."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        model: str | None,
        compatible: Mapping[str, float] | None = None,
        embedding_dim: int | None = None,
        interval_s: float = 2.0,
        score_norm: ScoreNorm | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.score_norm = score_norm  # the recognizer's cohort: matched scores are normalised against it
        self.model = model
        self.compatible = dict(compatible or {})
        self.embedding_dim = embedding_dim
        self.interval_s = float(interval_s)
        self.matcher: Matcher | None = None
        self.problem: str | None = None  # one line while the file cannot be used
        self.errors = 0  # episodes of an unusable file since start
        self.loads = 0
        self._gallery: Gallery | None = None
        self._file_id: tuple[int, int] | None = None
        self._version: tuple[int, int] | None = None
        self._checked = -float("inf")
        self._since: float | None = None

    @property
    def people(self) -> int:
        return len(self.matcher) if self.matcher is not None else 0

    def poll(self, force: bool = False, strict: bool = False) -> bool:
        """Reload when the gallery changed (checked at most every `interval_s` unless `force`); True when the
        matcher was replaced. `strict` (start-up): an embedding size that cannot match raises."""
        if self.path is None:
            return False
        now = time.monotonic()
        if not force and now - self._checked < self.interval_s:
            return False
        self._checked = now
        try:
            return self._poll(force)
        except GalleryDimensionError as e:
            if strict:
                raise
            self._fail(str(e))
        except InputError as e:
            self._fail(str(e))
        except sqlite3.Error as e:
            self._fail(f"{self.path}: gallery is damaged or unreadable ({str(e).strip() or type(e).__name__})")
        except OSError as e:
            self._fail(f"{self.path}: gallery cannot be read ({e.strerror or e})")
        return False

    def _poll(self, force: bool) -> bool:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self.matcher is None and self.problem is None:
                return False  # not enrolled yet: everyone is unknown (the service logs this at start)
            raise InputError(f"{self.path}: gallery file is gone") from None
        file_id = (st.st_dev, st.st_ino)
        if self._gallery is not None and file_id != self._file_id:
            log.info("gallery %s was replaced; reading the new file", self.path)
            self._close()
        if self._gallery is None:
            self._gallery = Gallery(self.path, create=False)
            self._file_id = file_id
            self._version = None
        g = self._gallery
        version = g.version()
        if version == self._version and not force and self.problem is None:
            return False
        check = g.db.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in check] != ["ok"]:
            raise InputError(f"{self.path}: gallery is damaged (quick_check: {check[0][0]})")
        matcher = Matcher.load(g, self.model, self.compatible, self.score_norm)
        d = matcher.matrix.shape[1] if len(matcher) else None
        if d is not None and self.embedding_dim is not None and d != self.embedding_dim:
            raise GalleryDimensionError(
                f"{self.path}: gallery embeddings are {d}-d, the recognizer {self.model or ''} makes "
                f"{self.embedding_dim}-d; enrol again with this recognizer (edge-mtl gallery reenroll)"
            )
        self._version = version
        self.matcher = matcher
        self.loads += 1
        if self.problem is not None:
            took = time.monotonic() - (self._since or time.monotonic())
            log.warning("gallery %s is readable again after %.0f s: %d people", self.path, took, len(matcher))
            self.problem = None
            self._since = None
        else:
            log.info("gallery %s: %d people", self.path, len(matcher))
        return True

    def _fail(self, reason: str) -> None:
        """Keep the last good matcher; say so once per episode (health shows the latest reason)."""
        self._close()
        kept = (f"identifying with the last good gallery ({self.people} people)" if self.matcher is not None
                else "no one is identified until it is readable")
        line = f"{reason}; {kept}"
        if self.problem is None:
            self.errors += 1
            self._since = time.monotonic()
            log.error("%s (retried every %.0f s)", line, self.interval_s)
        else:
            log.debug("%s", line)  # still unusable: said once when it started
        self.problem = line

    def _close(self) -> None:
        g, self._gallery = self._gallery, None
        if g is not None:
            try:
                g.close()
            except sqlite3.Error as e:
                log.debug("gallery %s: close failed: %s", self.path, e)

    def close(self) -> None:
        self._close()
