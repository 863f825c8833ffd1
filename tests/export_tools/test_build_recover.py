"""Recovering a trainable recognizer from a deploy ONNX (edge_mtl.train.post.recover) and fine-tuning from it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from build_helpers import REC_ARGS, faces_like

from edge_mtl.errors import ModelError
from edge_mtl.models.blocks import RepVGGBlock
from edge_mtl.models.recognizer import Recognizer, RecognizerExport
from edge_mtl.train.data.recognizer import RecognizerDataset, RecSample
from edge_mtl.train.losses.recognizer import MarginHead
from edge_mtl.train.losses.weighting import make_weighting
from edge_mtl.train.post.recover import imprint_centres, read_deploy, recover_recognizer
from edge_mtl.train.tasks.recognizer import RecognizerTask

ort = pytest.importorskip("onnxruntime")


def _ort(path: Path, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})  # type: ignore[no-any-return]


def test_recovered_model_reproduces_the_deploy_model(rec_export: Any) -> None:
    path, _, _ = rec_export
    x = faces_like(24, seed=3)
    calib = torch.from_numpy(x)
    model = recover_recognizer(path, [calib[:12], calib[12:]], check=calib[:4])
    assert any(isinstance(m, RepVGGBlock) and m.fused is None for m in model.modules())  # training form
    want = _ort(path, faces_like(6, seed=9))
    with torch.no_grad():
        got = RecognizerExport(model.eval())(torch.from_numpy(faces_like(6, seed=9)))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.numpy(), w, atol=1e-4, rtol=1e-4)
    # train mode normalises by the batch's statistics: on the calibration batch itself those are exactly the
    # recovered running statistics, so the backbone (and the heads on its pooled features) are unchanged
    model.train()
    with torch.no_grad():
        trained = RecognizerExport(model)(calib)
    deploy = _ort(path, x)
    for i in (1, 2, 3):  # age, gender, quality: no BatchNorm of their own
        np.testing.assert_allclose(trained[i].numpy(), deploy[i], atol=1e-3, rtol=1e-3)


def test_recovered_branches_start_silent_and_learn(rec_export: Any) -> None:
    path, _, _ = rec_export
    calib = torch.from_numpy(faces_like(8, seed=4))
    model = recover_recognizer(path, [calib])
    block = next(m for m in model.modules() if isinstance(m, RepVGGBlock) and m.bn_id is not None)
    assert float(block.bn1.weight.detach().abs().sum()) == 0.0 and block.bn_id is not None
    assert float(block.bn_id.weight.detach().abs().sum()) == 0.0
    model.train()
    out = model(calib)
    (out["age"].sum() + out["embedding"].pow(2).sum()).backward()
    assert block.bn1.weight.grad is not None and float(block.bn1.weight.grad.abs().sum()) > 0


def test_read_deploy_refuses_what_it_cannot_recover(tmp_path: Path, det_export: Any) -> None:
    det_path, _, _ = det_export
    with pytest.raises(ModelError, match="not an edge-mtl recognizer"):
        read_deploy(det_path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not onnx")
    with pytest.raises(ModelError, match="not a readable ONNX"):
        read_deploy(junk)
    with pytest.raises(ModelError, match="no such model"):
        read_deploy(tmp_path / "absent.onnx")
    with pytest.raises(ModelError, match="calibration faces"):
        recover_recognizer(_recognizer_onnx(tmp_path), [])


def _recognizer_onnx(tmp_path: Path) -> Path:
    from build_helpers import make_recognizer

    from edge_mtl.export_tools.export import export_module

    out = tmp_path / "r.onnx"
    export_module(make_recognizer(1), "recognizer", REC_ARGS.to_dict(), out, version="t", provenance="test")
    return out


def test_imprint_centres_are_normalised_class_means() -> None:
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, -1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    c = imprint_centres(e, labels, 3)
    s = 0.5 ** 0.5
    torch.testing.assert_close(c[0], torch.tensor([s, s]))
    torch.testing.assert_close(c[1], torch.tensor([s, -s]))
    assert abs(float(c[2].norm()) - 1.0) < 1e-5  # no samples: a random unit vector


def test_recognizer_task_fine_tunes_from_a_deploy_model(rec_export: Any, tmp_path: Path) -> None:
    path, _, _ = rec_export
    rng = np.random.default_rng(0)
    crops = tmp_path / "crops.u8"
    imgs = ((faces_like(20, seed=5).transpose(0, 2, 3, 1) + 1) * 127.5).clip(0, 255).astype(np.uint8)
    with open(crops, "wb") as f:
        np.save(f, imgs)
    samples = [RecSample(source=0, row=i, identity=i % 4 if i < 16 else -1, age=float(rng.integers(1, 80)))
               for i in range(20)]
    task = RecognizerTask.__new__(RecognizerTask)
    task.cfg = SimpleNamespace(seed=0, workers=0, bf16=False, optim=SimpleNamespace(batch_size=8))  # type: ignore[assignment]
    task.args = REC_ARGS
    task.model = Recognizer(REC_ARGS)
    task.dataset = RecognizerDataset([crops], samples, None, train=True, seed=0)
    task.n_classes = 4
    task.margin = MarginHead(REC_ARGS.embedding_dim, 4)
    task.weighting = make_weighting("static", ["identity"], {"identity": 1.0})
    task._mean = torch.full((1, 3, 1, 1), 127.5)
    task._std = torch.full((1, 3, 1, 1), 127.5)
    task.init_from_deploy(path, calib_batches=2)
    # eval-mode equality with what was shipped, on the clean crops
    x = (torch.from_numpy(imgs[:, :, :, ::-1].copy()).permute(0, 3, 1, 2).float() - 127.5) / 127.5
    want = _ort(path, x.numpy())
    task.model.eval()
    with torch.no_grad():
        got = RecognizerExport(task.model)(x)  # type: ignore[arg-type]
    np.testing.assert_allclose(got[0].numpy(), want[0], atol=1e-4)
    # each identity's centre is the normalised mean of its faces' shipped embeddings
    emb = torch.from_numpy(want[0][:16])
    means = torch.nn.functional.normalize(torch.stack([emb[i::4].mean(0) for i in range(4)]), dim=1)
    torch.testing.assert_close(task.margin.weight.data, means, atol=1e-4, rtol=1e-4)


def test_a_release_as_teacher_embeds_the_crop_cache(rec_export: Any, tmp_path: Path) -> None:
    """`python -m edge_mtl.train.data.teacher --from-model`: shards keyed like the dlib teacher's, holding the release's
    embeddings of the cached crops (missing faces skipped), resumable, and bad input is exit code 2."""
    import json

    from edge_mtl.train.data.teacher import extract_from_model, load_targets, main

    path, _, _ = rec_export
    imgs = ((faces_like(5, seed=6).transpose(0, 2, 3, 1) + 1) * 127.5).clip(0, 255).astype(np.uint8)
    with open(tmp_path / "src.u8", "wb") as f:
        np.save(f, imgs)
    status = ["detected", "missing", "detected", "canonical", "detected"]
    (tmp_path / "src.json").write_text(json.dumps({"keys": [f"k{i}" for i in range(5)], "status": status}))
    out = tmp_path / "teacher"
    assert extract_from_model(path, tmp_path, ["src"], out) == 4
    got = load_targets(out)
    assert sorted(got) == ["k0", "k2", "k3", "k4"]
    want = _ort(path, imgs[:, :, :, ::-1].transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1)[0]
    for i in (0, 2, 3, 4):
        np.testing.assert_allclose(got[f"k{i}"], want[i], atol=2e-3)  # stored as float16
    assert extract_from_model(path, tmp_path, ["src"], out) == 0  # done shards are skipped
    assert main(["--out", str(out), "--from-model", str(path), "--crops", str(tmp_path), "--only", "absent"]) == 2
