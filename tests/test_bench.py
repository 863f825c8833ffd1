"""`edge-mtl bench`: argument checking (exit 2, one line) and one real run over the shared pedestrians clip with the
shipped models. Speeds are reported, never asserted (these machines are shared and noisy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_mtl.commands.cli import main
from edge_mtl.eval.bench import _frames


@pytest.mark.parametrize(
    ("arg", "value", "says"),
    [
        ("--batches", "abc", "expected a whole number, got 'abc'"),
        ("--batches", "8,0", "expected at least 1, got 0"),
        ("--batches", ",", "expected batch sizes such as 1,8,32"),
        ("--frames", "0", "expected at least 1, got 0"),
        ("--frames", "-3", "expected at least 1, got -3"),
        ("--precisions", "fp32,fp64", "expected a comma list of fp32, fp16, int8, got 'fp32,fp64'"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(arg: str, value: str, says: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["bench", arg, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"edge-mtl bench: error: argument {arg}: {says}"


def test_unreadable_video_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video")
    assert main(["bench", "--video", str(bad), "--frames", "2"]) == 2
    assert capsys.readouterr().err.strip() == f"edge-mtl: error: {bad}: cannot open video"


def test_frames_times_each_decode_and_returns_the_frames(data_dir: Path) -> None:
    clip = data_dir / "videos" / "pedestrians_1080p.mp4"
    frames, times, fps = _frames(clip, 5)
    assert len(frames) == len(times) == 5
    assert frames[0].shape == (1080, 1920, 3)
    assert all(t > 0 for t in times)
    assert fps == pytest.approx(25.0, abs=0.5)
    # the kept frames are the clip's first five, in order (the timed pass and the kept pass read the same frames)
    again, _, _ = _frames(clip, 2)
    assert all((a == b).all() for a, b in zip(again, frames[:2], strict=True))


def test_bench_runs_the_shipped_models_over_the_clip(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--json", "--frames", "6", "--batches", "1,2", "--precisions", "fp32,int8",
                 "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["video"] == "pedestrians_1080p.mp4" and out["frames"] == 6 and out["frame_size"] == [1920, 1080]
    assert out["decode"]["n"] == 6
    assert set(out["precisions"]) == {"fp32", "int8"}
    for prec, entry in out["precisions"].items():
        assert set(entry["recognize"]) == {"batch_1", "batch_2"}, prec
        assert all(r["faces_per_s"] > 0 for r in entry["recognize"].values())
        e2e = entry["end_to_end"]
        assert e2e["frames"] == 6 and e2e["faces"] > 0, (prec, e2e)  # the clip shows pedestrians in every frame
        assert 0 < e2e["fps_with_decode"] < e2e["fps"]
        assert e2e["fps_decode_in_thread"] > 0  # the daemon's own file capture feeding the pipeline
        assert {"detect", "recognize"} <= set(entry["stages"])


def test_format_bench_side_by_side_with_ratios() -> None:
    from edge_mtl.eval.bench import format_bench

    def entry(det: float, b1: float, fps: float) -> dict[str, object]:
        return {"provider": "CPUExecutionProvider", "detect": {"fps": det},
                "recognize": {"batch_1": {"faces_per_s": b1}},
                "end_to_end": {"fps": fps, "fps_with_decode": fps / 2, "fps_decode_in_thread": fps * 0.8}}

    result = {"machine": {"cpu": "x86", "cores": 2, "onnxruntime": "1.32.0"}, "video": "v.mp4",
              "frame_size": [640, 480], "frames": 10, "detector_input": 320, "decode": {"p50_ms": 2.5},
              "precisions": {"fp32": entry(50.0, 600.0, 40.0), "fp16": {"skipped": "no fp16 model"},
                             "int8": entry(40.0, 900.0, 30.0)}}
    assert format_bench(result).splitlines() == [
        "machine: x86, 2 cores, onnxruntime 1.32.0",
        "video: v.mp4 640x480, 10 frames; decode p50 2.5 ms; detector input 320",
        "fp16: skipped (no fp16 model)",
        "                                                   fp32  int8  int8/fp32",
        "detect, frames/s                                     50    40      0.80x",
        "recognize batch 1, faces/s                          600   900      1.50x",
        "end to end, frames/s                                 40    30      0.75x",
        "end to end with decode, frames/s                     20    15      0.75x",
        "end to end, decode in a thread (as run), frames/s    32    24      0.75x",
        "providers: fp32=CPUExecutionProvider, int8=CPUExecutionProvider",
    ]
    only_skipped = {**result, "precisions": {"fp16": {"skipped": "no fp16 model"}}}
    assert format_bench(only_skipped).splitlines()[-1] == "fp16: skipped (no fp16 model)"
