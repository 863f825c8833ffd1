"""The gallery: enrolled people and their face embeddings in SQLite, readable while the daemon runs.

The daemon polls `version()` (SQLite's data_version plus a change counter) and reloads the matrix when another
process (`edge-mtl enroll`, `edge-mtl gallery remove`) changed it: no restart needed. The file is created
owner-only (0600): embeddings are biometric data.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_mtl.errors import InputError
from edge_mtl.identity.scorenorm import ScoreNorm

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS people (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    quality REAL,
    source TEXT,
    model TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Gallery:
    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise InputError(f"{self.path}: no such gallery")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        try:
            self.db = sqlite3.connect(str(self.path), timeout=10.0, check_same_thread=False)
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.executescript(SCHEMA)
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('changes', '0')")
            self.db.commit()
        except sqlite3.DatabaseError as e:
            raise InputError(f"{self.path}: not a gallery database ({e})") from None

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def _bump(self) -> None:
        self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'changes'")

    def version(self) -> tuple[int, int]:
        """Changes whenever any connection modifies the gallery."""
        dv = self.db.execute("PRAGMA data_version").fetchone()[0]
        ch = self.db.execute("SELECT value FROM meta WHERE key = 'changes'").fetchone()[0]
        return int(dv), int(ch)

    def add(
        self,
        name: str,
        embeddings: npt.NDArray[np.float32],
        qualities: list[float] | None = None,
        sources: list[str] | None = None,
        model: str = "",
        replace: bool = False,
    ) -> int:
        """Add embeddings (N x D, unit norm) for `name` in one transaction; returns the person's total count."""
        if not name.strip():
            raise InputError("enrol: the name must not be empty")
        emb = np.asarray(embeddings, np.float32)
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise InputError("enrol: no embeddings to add")
        dims = {int(r[0]) for r in self.db.execute("SELECT DISTINCT dim FROM embeddings WHERE model = ?", (model,))}
        if dims and dims != {emb.shape[1]}:
            raise InputError(
                f"enrol: gallery holds {sorted(dims)}-d embeddings of model {model!r}, got {emb.shape[1]}-d"
            )
        now = time.time()
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO people (name, created) VALUES (?, ?)", (name, now))
            pid = self.db.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()[0]
            if replace:
                self.db.execute("DELETE FROM embeddings WHERE person_id = ?", (pid,))
            for i, e in enumerate(emb):
                self.db.execute(
                    "INSERT INTO embeddings (person_id, dim, vector, quality, source, model, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        pid,
                        emb.shape[1],
                        e.astype(np.float32).tobytes(),
                        None if qualities is None else float(qualities[i]),
                        None if sources is None else sources[i],
                        model,
                        now,
                    ),
                )
            self._bump()
        return int(self.db.execute("SELECT COUNT(*) FROM embeddings WHERE person_id = ?", (pid,)).fetchone()[0])

    def remove(self, name: str) -> int:
        """Remove a person; returns how many embeddings were deleted (0: no such person)."""
        with self.db:
            row = self.db.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            if row is None:
                return 0
            n = self.db.execute("SELECT COUNT(*) FROM embeddings WHERE person_id = ?", (row[0],)).fetchone()[0]
            self.db.execute("DELETE FROM embeddings WHERE person_id = ?", (row[0],))
            self.db.execute("DELETE FROM people WHERE id = ?", (row[0],))
            self._bump()
        return int(n)

    def people(self) -> list[dict[str, Any]]:
        """Enrolled people: name, embedding count, creation time and the recognizer versions that made them."""
        rows = self.db.execute(
            "SELECT p.name, COUNT(e.id), p.created, GROUP_CONCAT(DISTINCT e.model) FROM people p "
            "LEFT JOIN embeddings e ON e.person_id = p.id GROUP BY p.id ORDER BY p.name"
        ).fetchall()
        return [
            {"name": r[0], "embeddings": int(r[1]), "created": round(float(r[2]), 3),
             "models": sorted(r[3].split(",")) if r[1] else []}
            for r in rows
        ]

    def matrix(
        self, model: str | None = None, compatible: Sequence[str] = ()
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Embeddings with their person's name: (names per row, N x D); only those made by `model` when given.

        Embeddings of different recognizers live in different spaces (even at the same dimension): a matcher
        must only compare an embedding with those its own model made. The exception is `compatible`, earlier
        versions that `model` declares comparable (trained and measured to match them): a person with no
        embedding of `model` is represented by their embeddings of the first of those versions they have."""
        names, _, mat = self.rows(model, compatible)
        return names, mat

    def rows(
        self, model: str | None = None, compatible: Sequence[str] = ()
    ) -> tuple[list[str], list[str], npt.NDArray[np.float32]]:
        """`matrix` with the version that made each row: (names, versions, N x D)."""
        versions = [model, *(c for c in compatible if c != model)] if model is not None else []
        where = f" WHERE e.model IN ({','.join('?' * len(versions))})" if versions else ""
        rows = self.db.execute(
            "SELECT p.name, e.model, e.dim, e.vector FROM embeddings e JOIN people p ON p.id = e.person_id"
            + where + " ORDER BY e.id",
            versions,
        ).fetchall()
        if versions:
            rank = {v: i for i, v in enumerate(versions)}
            first: dict[str, int] = {}
            for name, m, _, _ in rows:
                first[name] = min(first.get(name, len(versions)), rank[m])
            rows = [r for r in rows if rank[r[1]] == first[r[0]]]
        if not rows:
            return [], [], np.zeros((0, 0), np.float32)
        if len({int(r[2]) for r in rows}) > 1:
            raise InputError(f"{self.path}: embeddings of several dimensions; name the recognizer version")
        mat = np.stack([np.frombuffer(r[3], np.float32, count=int(r[2])) for r in rows])
        return [r[0] for r in rows], [r[1] or "" for r in rows], mat

    def sources_to_reembed(self, model: str, names: list[str] | None = None) -> dict[str, list[str]]:
        """People (all, or `names`) without an embedding of `model`: {name: the image paths of their newest other
        version's embeddings}. InputError for a named person who is not enrolled."""
        people = {p["name"]: p for p in self.people()}
        for n in names or []:
            if n not in people:
                raise InputError(f"{self.path}: no person named {n!r}")
        out: dict[str, list[str]] = {}
        for name in names or sorted(people):
            if model in people[name]["models"]:
                continue
            rows = self.db.execute(
                "SELECT e.model, e.source FROM embeddings e JOIN people p ON p.id = e.person_id WHERE p.name = ? "
                "ORDER BY e.created DESC, e.id",
                (name,),
            ).fetchall()
            newest = rows[0][0] if rows else None
            out[name] = [src for m, src in rows if m == newest and src]
        return out

    def stale(self, model: str, compatible: Sequence[str] = ()) -> dict[str, list[str]]:
        """People with no embedding of recognizer `model` (nor of a version in `compatible`): {the newest version
        they have: [names]}."""
        versions = [model, *compatible]
        marks = ",".join("?" * len(versions))
        rows = self.db.execute(
            "SELECT p.name, e.model FROM embeddings e JOIN people p ON p.id = e.person_id "
            f"WHERE p.id NOT IN (SELECT person_id FROM embeddings WHERE model IN ({marks})) "
            "ORDER BY p.name, e.created DESC, e.id",
            versions,
        ).fetchall()
        newest: dict[str, str] = {}
        for name, m in rows:
            newest.setdefault(name, m or "unknown")
        out: dict[str, list[str]] = {}
        for name, m in newest.items():
            out.setdefault(m, []).append(name)
        return dict(sorted(out.items()))


class Matcher:
    """Cosine matching of an embedding against the gallery: per person, the best of their embeddings.

    `margins` (per row, default 0) are taken off a row's similarity: what a recognizer declares for the embeddings of
    a compatible earlier version, so that its threshold keeps the false-accept rate it has on its own embeddings.
    With `norm` (the recognizer's cohort, `edge_mtl.identity.scorenorm`), similarities are normalised by the cohort
    statistics of the probe and of each gallery row (computed once here), on the cosine scale."""

    def __init__(
        self, names: list[str], matrix: npt.NDArray[np.float32], margins: npt.NDArray[np.float32] | None = None,
        norm: ScoreNorm | None = None,
    ) -> None:
        self.people = sorted(set(names))
        self.matrix = matrix.astype(np.float32)
        self.margins = np.zeros(len(names), np.float32) if margins is None else np.asarray(margins, np.float32)
        idx = {n: i for i, n in enumerate(self.people)}
        self.owner = np.array([idx[n] for n in names], np.int64)
        self.norm = norm if norm is not None and len(names) and matrix.shape[1] == norm.cohort.shape[1] else None
        self._row_stats = self.norm.stats(self.matrix) if self.norm is not None else None

    @staticmethod
    def load(gallery: Gallery, model: str | None = None, compatible: Mapping[str, float] | None = None,
             norm: ScoreNorm | None = None) -> Matcher:
        """The gallery's embeddings made by recognizer version `model` (all when None), or for people without
        those, by a version in `compatible` ({version: margin}, in order of preference, as `model` declares them;
        the margin is taken off those rows' similarities). Everyone else is left out, with a warning naming the
        people to enrol again."""
        compatible = dict(compatible or {})
        if model is not None:
            for other, names in gallery.stale(model, list(compatible)).items():
                log.warning(
                    "gallery %s: %d people have embeddings of recognizer %s, not of the loaded %s; those are not "
                    "matched (enrol them again: edge-mtl gallery reenroll): %s",
                    gallery.path, len(names), other, model, _few(names),
                )
        names, versions, mat = gallery.rows(model, list(compatible))
        if model is not None and compatible:
            fallback: dict[str, list[str]] = {}
            for name, v in dict(zip(names, versions, strict=True)).items():
                if v != model:
                    fallback.setdefault(v, []).append(name)
            for other, who in fallback.items():
                log.info(
                    "gallery %s: %d people are matched with their embeddings of recognizer %s, which %s declares "
                    "compatible (similarity margin %.3f; edge-mtl gallery reenroll gives them %s embeddings): %s",
                    gallery.path, len(who), other, model, compatible[other], model, _few(sorted(who)),
                )
        margins = np.array([compatible.get(v, 0.0) if v != model else 0.0 for v in versions], np.float32)
        return Matcher(names, mat, margins, norm)

    def __len__(self) -> int:
        return len(self.people)

    def scores(self, embedding: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Best similarity per person (cosine, or normalised against the cohort), less any cross-version margin
        (same order as `people`)."""
        out = np.full(len(self.people), -1.0, np.float32)
        if not self.people:
            return out
        if self.matrix.shape[1] != embedding.shape[-1]:
            d, e = self.matrix.shape[1], embedding.shape[-1]
            raise ValueError(f"gallery embeddings are {d}-d, the recognizer's {e}-d")
        e = embedding.astype(np.float32)
        sims = self.matrix @ e
        if self.norm is not None and self._row_stats is not None:
            sims = self.norm.scores(sims, self.norm.stats(e), self._row_stats)
        sims = sims - self.margins
        np.maximum.at(out, self.owner, sims)
        return out

    def best(self, embedding: npt.NDArray[np.float32],
             scores: npt.NDArray[np.float32] | None = None) -> tuple[str | None, float, float]:
        """(best person, their similarity, the runner-up's similarity); `scores`: this embedding's `scores`, when
        the caller has them already."""
        s = self.scores(embedding) if scores is None else scores
        if s.size == 0:
            return None, -1.0, -1.0
        order = np.argsort(-s)
        second = float(s[order[1]]) if s.size > 1 else -1.0
        return self.people[int(order[0])], float(s[order[0]]), second


def _few(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
