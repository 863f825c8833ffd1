"""Teacher extraction shards: resumable, and shared by several processes without doing any shard twice."""

from __future__ import annotations

import fcntl
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edge_mtl.data.sources import FaceRecord
from edge_mtl.train.data import teacher as T


def _records(tmp_path: Path, n: int) -> list[FaceRecord]:
    """n tiny images whose pixel value encodes their index, so an embedding can be traced back to its image."""
    recs = []
    for i in range(n):
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(p), np.full((8, 8, 3), i, np.uint8))
        recs.append(FaceRecord(source="s", path=str(p), key=f"k{i}"))
    return recs


class CountingEmbed:
    """Embeds an image as a one-hot of its pixel value; counts calls; optionally slow."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, rgb: npt.NDArray[np.uint8], hint: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float32]:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        e = np.zeros(128, np.float32)
        e[int(rgb[0, 0, 0]) % 128] = 1.0
        return e


def _check_all(out: Path, n: int) -> None:
    got = T.load_targets(out)
    assert sorted(got) == sorted(f"k{i}" for i in range(n))
    for i in range(n):
        assert int(np.argmax(got[f"k{i}"])) == i % 128


def test_two_workers_share_an_extraction_without_repeating_a_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(T, "SHARD", 4)
    recs = _records(tmp_path, 22)  # 6 shards, the last one short
    out = tmp_path / "teacher"
    emb = CountingEmbed(delay=0.01)
    done: list[int] = []
    workers = [threading.Thread(target=lambda r=r: done.append(T.extract(recs, out, "s", reverse=r, embed=emb)))
               for r in (False, True, False)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert emb.calls == 22 and sum(done) == 22  # every face embedded exactly once between the three
    assert sorted(p.name for p in out.glob("*.npz")) == [f"s-{i:04d}.npz" for i in range(6)]
    _check_all(out, 22)
    # resuming a finished extraction does nothing
    assert T.extract(recs, out, "s", embed=emb) == 0 and emb.calls == 22


def test_a_shard_claimed_by_another_process_is_passed_over_then_done_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(T, "SHARD", 4)
    recs = _records(tmp_path, 10)
    out = tmp_path / "teacher"
    out.mkdir()
    emb = CountingEmbed()
    with open(out / "s-0001.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert T.extract(recs, out, "s", embed=emb) == 6  # shards 0 and 2; shard 1 is someone else's
        assert not (out / "s-0001.npz").exists()
    # that process died without writing it: its lock went with it, and a rerun completes the set
    assert T.extract(recs, out, "s", embed=emb) == 4
    _check_all(out, 10)


def test_a_teacher_folder_without_finished_shards_is_an_input_error(tmp_path: Path) -> None:
    """A run configured with a teacher must not train without one because the extraction never ran or is unfinished."""
    from edge_mtl.errors import InputError

    out = tmp_path / "teacher"
    with pytest.raises(InputError, match="no teacher embeddings"):
        T.load_targets(out)  # absent
    out.mkdir()
    np.savez(out / "s_00000.tmp.npz", keys=np.array(["k0"]), emb=np.ones((1, 128), np.float32))
    with pytest.raises(InputError, match="no teacher embeddings"):
        T.load_targets(out)  # only a shard still being written
    np.savez(out / "s_00000.npz", keys=np.array(["k0"]), emb=np.ones((1, 128), np.float32))
    assert sorted(T.load_targets(out)) == ["k0"]
