"""Bad inputs end with a one-line reason and exit 2 and never touch events already queued; damaged frames are
skipped and counted while the daemon goes on."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from service_helpers import (
    EVENTFUL,
    Daemon,
    NotifySocket,
    child_env,
    edge_mtl,
    jsonl_lines,
    one_line_error,
    queue_rows,
    queue_state,
)

from edge_mtl.commands.cli import main


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    return rc, capsys.readouterr().err


def test_corrupt_video_file_exits_2_before_ready_and_keeps_the_queue(
    tmp_path: Path, model_args: list[str], seeded_queue: Path, notify: NotifySocket
) -> None:
    """Not a video at all: exit 2 with one line, READY=1 never sent, the queue and its cursors untouched."""
    bad = tmp_path / "camera.mp4"
    bad.write_bytes(bytes(range(256)) * 64)
    before = queue_state(seeded_queue)
    d = Daemon(["--source", str(bad), "--events", str(seeded_queue), "--jsonl", str(tmp_path / "e.jsonl"),
                *model_args], env=child_env(notify.env(watchdog_s=5)))
    rc = d.wait(120)
    assert rc == 2, d.stderr[-2000:]
    line = one_line_error(d.stderr)
    assert str(bad) in line and "cannot open as a video" in line
    assert queue_state(seeded_queue) == before
    assert not (tmp_path / "e.jsonl").exists()  # the failure came before any event file was opened
    assert notify.messages("READY=1") == []


def test_damaged_frames_are_skipped_and_counted(
    tmp_path: Path, model_args: list[str], seeded_queue: Path, clips: dict[str, Path]
) -> None:
    """Bytes zeroed in the middle of the file: the run goes on to the end (exit 0), counts the corrupt frames,
    and appends its events after the 20 already queued (seqs contiguous)."""
    before = queue_rows(seeded_queue)
    cfg = tmp_path / "run.toml"
    cfg.write_text(EVENTFUL)
    log = tmp_path / "e.jsonl"
    proc = edge_mtl("run", "--config", str(cfg), "--source", str(clips["damaged"]), "--events", str(seeded_queue),
                    "--jsonl", str(log), *model_args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r"'frames_read': (\d+).*'frames_corrupt': (\d+)", proc.stderr)
    assert m, proc.stderr[-2000:]
    read, corrupt = int(m.group(1)), int(m.group(2))
    assert corrupt > 0 and 0 < read < 40, (read, corrupt)
    after = queue_rows(seeded_queue)
    assert after[: len(before)] == before
    assert len(after) > len(before), "the damaged clip still has decodable frames with detections"
    assert [s for s, _ in after] == list(range(1, len(after) + 1))
    assert jsonl_lines(log) == [body for _, body in after]


def test_bad_config_exits_2(
    tmp_path: Path, model_args: list[str], seeded_queue: Path, clips: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[tracker]\nlost_frame = 3\n")
    before = queue_state(seeded_queue)
    rc, err = _main(capsys, "run", "--config", str(bad), "--source", str(clips["short"]), "--events",
                    str(seeded_queue), *model_args)
    assert rc == 2
    line = one_line_error(err)
    assert f"{bad}:2: tracker.lost_frame: unknown key" in line
    rc, err = _main(capsys, "check-config", str(bad))
    assert rc == 2 and "unknown key" in one_line_error(err)
    # a value the daemon refuses although the schema would allow it: metrics on a public address
    public = tmp_path / "public.toml"
    public.write_text('[service]\nmetrics_port = 9105\nmetrics_host = "0.0.0.0"\n')
    rc, err = _main(capsys, "run", "--config", str(public), "--source", str(clips["short"]), "--events",
                    str(seeded_queue), *model_args)
    assert rc == 2 and "loopback" in one_line_error(err)
    # store_images = true promises something edge-mtl does not do: refused, not silently ignored
    images = tmp_path / "images.toml"
    images.write_text("[events]\nstore_images = true\n")
    rc, err = _main(capsys, "check-config", str(images))
    assert rc == 2 and "not implemented" in one_line_error(err)
    assert queue_state(seeded_queue) == before


def test_enrolment_of_a_non_image_or_a_faceless_image_exits_2(
    tmp_path: Path, models: dict[str, Path], seeded_queue: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2
    import numpy as np

    from edge_mtl.identity.gallery import Gallery

    gallery = tmp_path / "gallery.db"
    with Gallery(gallery) as g:
        g.add("alice", np.eye(1, 128, dtype=np.float32), [0.9], ["a.jpg"], model="tiny-test")
    gallery_before = gallery.read_bytes()
    before = queue_state(seeded_queue)
    text = tmp_path / "photo.jpg"
    text.write_text("this is not a picture\n")
    faceless = tmp_path / "wall.png"
    cv2.imwrite(str(faceless), np.full((240, 320, 3), 128, np.uint8))
    argv = ["--detector", str(models["quiet_detector"]), "--recognizer", str(models["recognizer"])]
    for image, reason in ((text, "not a readable image"), (faceless, "no face found")):
        for target in (gallery, tmp_path / "new.db"):
            rc, err = _main(capsys, "enroll", str(image), "--gallery", str(target), "--name", "bob", *argv)
            assert rc == 2
            line = one_line_error(err)
            assert str(image) in line and reason in line
    assert gallery.read_bytes() == gallery_before
    assert not (tmp_path / "new.db").exists()  # all or nothing: no half-made gallery
    assert queue_state(seeded_queue) == before


def test_truncated_model_exits_2(
    tmp_path: Path, models: dict[str, Path], seeded_queue: Path, clips: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = models["detector"].read_bytes()
    cut = tmp_path / "detector.onnx"
    cut.write_bytes(data[: len(data) // 2])
    before = queue_state(seeded_queue)
    rc, err = _main(capsys, "run", "--source", str(clips["short"]), "--events", str(seeded_queue),
                    "--detector", str(cut), "--recognizer", str(models["recognizer"]))
    assert rc == 2
    line = one_line_error(err)
    assert str(cut) in line and "cannot load model" in line
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'[detector]\nmodel = "{cut}"\n[recognizer]\nmodel = "{models["recognizer"]}"\n')
    rc, err = _main(capsys, "check-config", str(cfg))
    assert rc == 2 and "cannot load model" in one_line_error(err)
    assert queue_state(seeded_queue) == before


def _fake_gpu(monkeypatch: pytest.MonkeyPatch, cc: tuple[int, int], trt_version: str) -> None:
    """Stand-ins for the two things this CPU box lacks: the TensorRT package (only its version is read before
    the check) and the CUDA runtime (only the device properties). The engine-cache check under test is real."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = trt_version  # type: ignore[attr-defined]
    runtime = types.ModuleType("cuda.bindings.runtime")
    runtime.cudaError_t = SimpleNamespace(cudaSuccess=0)  # type: ignore[attr-defined]
    runtime.cudaSetDevice = lambda dev: (0,)  # type: ignore[attr-defined]
    runtime.cudaGetDeviceProperties = lambda dev: (  # type: ignore[attr-defined]
        0, SimpleNamespace(major=cc[0], minor=cc[1], name=b"NVIDIA H100 80GB HBM3\0"))
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = runtime  # type: ignore[attr-defined]
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings  # type: ignore[attr-defined]
    for name, mod in (("tensorrt", trt), ("cuda", cuda), ("cuda.bindings", bindings),
                      ("cuda.bindings.runtime", runtime)):
        monkeypatch.setitem(sys.modules, name, mod)


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        (((9, 0), "10.3.0"), "engine built for sm_87 / TensorRT 10.3.0, this box is sm_90 / TensorRT 10.3.0"),
        (((8, 7), "10.8.0"), "engine built for sm_87 / TensorRT 10.3.0, this box is sm_87 / TensorRT 10.8.0"),
    ],
    ids=["other-gpu", "other-tensorrt"],
)
def test_engine_built_elsewhere_exits_2(
    tmp_path: Path, models: dict[str, Path], seeded_queue: Path, clips: dict[str, Path],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    box: tuple[tuple[int, int], str], expected: str,
) -> None:
    import onnxruntime as ort

    from edge_mtl.export_tools.onnx_utils import file_sha256
    from edge_mtl.runtime.engine import ModelMetadata
    from edge_mtl.runtime.engine_cache import BuildTarget, CacheEntry, cache_key, make_profile, write_entry

    onnx = models["detector"]
    props = dict(ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
                 .get_modelmeta().custom_metadata_map)
    meta = ModelMetadata.from_props(props, str(onnx))
    orin = BuildTarget((8, 7), "10.3.0", "Orin")
    profile = make_profile(meta, max_batch=4)
    sha = file_sha256(onnx)
    key = cache_key(sha, orin, "fp32", profile)
    plan = tmp_path / "engines" / f"detector-{key[:16]}.plan"
    plan.parent.mkdir()
    plan.write_bytes(b"serialized engine from another box")
    write_entry(plan.with_suffix(".json"), CacheEntry(
        key=key, model_sha256=sha, model_path="/opt/edge-mtl/models/detector.onnx", kind="detector",
        precision="fp32", compute_capability=(8, 7), gpu_name="Orin", tensorrt="10.3.0", profile=profile,
        metadata=props,
    ))
    _fake_gpu(monkeypatch, *box)
    before = queue_state(seeded_queue)
    rc, err = _main(capsys, "run", "--source", str(clips["short"]), "--events", str(seeded_queue),
                    "--backend", "tensorrt", "--detector", str(plan), "--recognizer", str(models["recognizer"]))
    assert rc == 2
    line = one_line_error(err)
    assert expected in line and "rebuild with `edge-mtl build-engine /opt/edge-mtl/models/detector.onnx`" in line
    assert queue_state(seeded_queue) == before
