"""The SQLite gallery (round trip, permissions, live reload across connections) and the matcher."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from edge_mtl.errors import InputError
from edge_mtl.identity.gallery import Gallery, Matcher


def _unit(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a, b = _unit(rng, 3), _unit(rng, 2)
    db = tmp_path / "sub" / "gallery.db"
    with Gallery(db) as g:
        assert g.people() == [] and g.matrix()[1].shape == (0, 0)
        assert g.add("bob", b, qualities=[0.5, 0.9], sources=["b1.jpg", "b2.jpg"], model="m1") == 2
        assert g.add("alice", a[:2]) == 2
        assert g.add("alice", a[2:]) == 3
    with Gallery(db, create=False) as g:
        people = g.people()
        assert [(p["name"], p["embeddings"]) for p in people] == [("alice", 3), ("bob", 2)]
        assert all(isinstance(p["created"], float) for p in people)
        names, mat = g.matrix()
        assert names == ["bob", "bob", "alice", "alice", "alice"]
        np.testing.assert_array_equal(mat, np.concatenate([b, a]))
        assert mat.dtype == np.float32
        assert g.add("alice", a[:1], replace=True) == 1
        assert g.remove("bob") == 2
        assert g.remove("bob") == 0
        assert [(p["name"], p["embeddings"]) for p in g.people()] == [("alice", 1)]
        names, mat = g.matrix()
        assert names == ["alice"]
        np.testing.assert_array_equal(mat, a[:1])


def test_file_is_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    old = os.umask(0o022)
    try:
        with Gallery(db) as g:
            g.add("alice", np.eye(1, 8, dtype=np.float32))
    finally:
        os.umask(old)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_version_changes_when_another_connection_writes(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    daemon = Gallery(db)
    try:
        v0 = daemon.version()
        assert daemon.version() == v0, "no change, same version"
        assert Matcher.load(daemon).people == []
        with Gallery(db, create=False) as cli:  # `edge-mtl enroll` in another process
            cli.add("alice", np.eye(2, 8, dtype=np.float32))
        v1 = daemon.version()
        assert v1 != v0
        m = Matcher.load(daemon)  # reload without restart
        assert m.people == ["alice"] and m.matrix.shape == (2, 8)
        with Gallery(db, create=False) as cli:
            cli.remove("alice")
        v2 = daemon.version()
        assert v2 not in (v0, v1)
        assert Matcher.load(daemon).people == []
        # the daemon's own writes change it too
        daemon.add("bob", np.eye(1, 8, dtype=np.float32))
        assert daemon.version() not in (v0, v1, v2)
    finally:
        daemon.close()


def test_input_errors(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    with pytest.raises(InputError, match="no such gallery"):
        Gallery(db, create=False)
    assert not db.exists()
    with Gallery(db) as g:
        g.add("alice", np.eye(2, 8, dtype=np.float32))
        with pytest.raises(InputError, match=r"\[8\]-d embeddings of model '', got 16-d"):
            g.add("bob", np.eye(2, 16, dtype=np.float32))
        with pytest.raises(InputError, match="name must not be empty"):
            g.add("  ", np.eye(1, 8, dtype=np.float32))
        with pytest.raises(InputError, match="no embeddings"):
            g.add("carol", np.zeros((0, 8), np.float32))
        with pytest.raises(InputError, match="no embeddings"):
            g.add("carol", np.zeros(8, np.float32))
        assert [p["name"] for p in g.people()] == ["alice"], "failed adds leave nothing behind"
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(InputError, match="not a gallery database"):
        Gallery(junk)


def test_matcher_best_is_max_over_a_persons_embeddings() -> None:
    e = np.eye(4, dtype=np.float32)
    # alice has two embeddings (e0, e1), bob one (e2), carol one (e3)
    m = Matcher(["alice", "bob", "alice", "carol"], np.stack([e[0], e[2], e[1], e[3]]))
    assert m.people == ["alice", "bob", "carol"] and len(m) == 3
    q = np.array([0.1, 0.8, 0.5, 0.3], np.float32)
    q /= np.linalg.norm(q)
    np.testing.assert_allclose(m.scores(q), [q[1], q[2], q[3]], rtol=1e-6)
    name, sim, second = m.best(q)
    assert name == "alice" and sim == pytest.approx(float(q[1])) and second == pytest.approx(float(q[2]))
    q2 = np.array([0.9, 0.0, 0.1, 0.0], np.float32)
    assert m.best(q2)[0] == "alice"
    assert m.best(np.array([0, 0, 1.0, 0], np.float32))[:2] == ("bob", 1.0)


def test_matcher_empty_and_single() -> None:
    empty = Matcher([], np.zeros((0, 0), np.float32))
    assert empty.best(np.ones(4, np.float32)) == (None, -1.0, -1.0)
    one = Matcher(["a"], np.eye(1, 4, dtype=np.float32))
    assert one.best(np.eye(1, 4, dtype=np.float32)[0]) == ("a", 1.0, -1.0)
    with pytest.raises(ValueError, match="4-d, the recognizer's 8-d"):
        one.best(np.ones(8, np.float32))


def test_matcher_uses_only_its_recognizers_embeddings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """After a recognizer upgrade, embeddings of the old model are in another space (here: same dimension):
    matching them would silently give wrong identities, so they are left out, with a warning naming the people."""
    e = np.eye(8, dtype=np.float32)
    with Gallery(tmp_path / "g.db") as g:
        g.add("alice", e[:2], model="recognizer-1.0")
        g.add("bob", e[2:3], model="recognizer-1.0")
        g.add("bob", e[3:4], model="recognizer-1.1")  # bob enrolled again with the new model
        g.add("carol", e[4:6], model="recognizer-1.1")
        with pytest.raises(InputError, match=r"\[8\]-d embeddings of model 'recognizer-1.1', got 4-d"):
            g.add("dave", np.eye(1, 4, dtype=np.float32), model="recognizer-1.1")
        g.add("dave", np.eye(1, 4, dtype=np.float32), model="other-4d")  # another model may differ in size
        assert {p["name"]: p["models"] for p in g.people()} == {
            "alice": ["recognizer-1.0"], "bob": ["recognizer-1.0", "recognizer-1.1"], "carol": ["recognizer-1.1"],
            "dave": ["other-4d"]}
        with caplog.at_level("WARNING", logger="edge_mtl.identity.gallery"):
            m = Matcher.load(g, "recognizer-1.1")
        assert m.people == ["bob", "carol"] and m.matrix.shape == (3, 8)
        np.testing.assert_array_equal(m.matrix[0], e[3])
        assert m.best(e[2])[1] == 0.0, "bob's old-model embedding is not matched"
        assert m.best(e[3])[:2] == ("bob", 1.0)
        warned = " ".join(r.getMessage() for r in caplog.records)
        assert "recognizer recognizer-1.0" in warned and "alice" in warned and "other-4d" in warned
        assert "bob" not in warned, "bob has an embedding of the loaded model"
        assert Matcher.load(g, "recognizer-1.0").people == ["alice", "bob"]
        with pytest.raises(InputError, match="several dimensions"):
            g.matrix()


def test_matcher_falls_back_to_versions_the_model_declares_compatible(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A release trained to stay comparable with its predecessor (metadata `compatible`) matches people enrolled
    with the predecessor until they are re-enrolled; a person with embeddings of the loaded model uses only those."""
    e = np.eye(8, dtype=np.float32)
    with Gallery(tmp_path / "g.db") as g:
        g.add("alice", e[:2], model="1.2")
        g.add("bob", e[2:3], model="1.2")
        g.add("bob", e[3:4], model="1.3")
        g.add("carol", e[4:5], model="1.3")
        g.add("dave", e[5:6], model="1.1")
        g.add("erin", e[6:7], model="1.1")
        g.add("erin", e[7:8], model="1.2")
        with caplog.at_level("INFO", logger="edge_mtl.identity.gallery"):
            m = Matcher.load(g, "1.3", {"1.2": 0.0})
        assert m.people == ["alice", "bob", "carol", "erin"] and m.matrix.shape == (5, 8)
        assert m.best(e[1])[:2] == ("alice", 1.0), "alice is matched by her 1.2 embeddings"
        assert m.best(e[3])[:2] == ("bob", 1.0)
        assert m.best(e[2])[1] == 0.0, "bob's 1.2 embedding is not used: he has a 1.3 one"
        assert m.best(e[7])[:2] == ("erin", 1.0) and m.best(e[6])[1] == 0.0, "erin: her newest compatible version"
        msgs = {r.levelname: r.getMessage() for r in caplog.records}
        assert "recognizer 1.1" in msgs["WARNING"] and "dave" in msgs["WARNING"] and "erin" not in msgs["WARNING"]
        assert "2 people are matched with their embeddings of recognizer 1.2" in msgs["INFO"]
        assert "alice, erin" in msgs["INFO"]
        # the preference follows the order the model lists its compatible versions
        assert Matcher.load(g, "1.3", {"1.1": 0.0, "1.2": 0.0}).best(e[6])[:2] == ("erin", 1.0)
        # a declared margin comes off cross-version similarities only: the same threshold, fewer false accepts
        m = Matcher.load(g, "1.3", {"1.2": 0.05})
        assert m.best(e[1])[:2] == ("alice", pytest.approx(0.95))
        assert m.best(e[3])[:2] == ("bob", 1.0)
        np.testing.assert_allclose(m.scores(e[0] + e[4]), [0.95, 0.0, 1.0, -0.05])
        # without the declaration only the model's own embeddings count
        assert Matcher.load(g, "1.3").people == ["bob", "carol"]
