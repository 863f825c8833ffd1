"""The multi-task recognizer training task.

Sources are mixed in one stream; each sample carries whichever labels its source has, and each loss is masked to
the samples that have its label: margin loss on identity-labelled CelebA faces, embedding distillation from the
dlib teacher on any face, age and gender on UTKFace (and gender on the CelebA gender set), and the quality head
on every face with a teacher embedding. Validation: LFW View 1 (development pairs only) and the UTKFace
validation split, through the same detector + alignment as runtime (cached crops).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from edge_mtl.data import sources as S
from edge_mtl.data.crops import CropSet, ensure_source
from edge_mtl.errors import InputError, ModelError
from edge_mtl.eval.attributes import attribute_metrics
from edge_mtl.eval.verification import read_pairs, view1
from edge_mtl.models.metadata import REC_MEAN, REC_STD, recognizer_metadata
from edge_mtl.models.recognizer import Recognizer, RecognizerArgs, RecognizerExport, SoftSharedRecognizer
from edge_mtl.paths import data_root
from edge_mtl.runtime.detector import FaceDetector
from edge_mtl.runtime.recognizer import FaceRecognizer
from edge_mtl.runtime.torch_engine import TorchEngine
from edge_mtl.train.config import RecognizerTrain, TrainConfig
from edge_mtl.train.data.recognizer import RecognizerDataset, RecSample
from edge_mtl.train.data.teacher import load_targets
from edge_mtl.train.losses.recognizer import (
    MarginHead,
    age_loss,
    distill_loss,
    gender_loss,
    quality_loss,
    soft_gender_loss,
)
from edge_mtl.train.losses.weighting import make_weighting

log = logging.getLogger(__name__)
LOSS_TASKS = {"identity", "distill", "age", "gender", "quality"}


def load_detector(path: Path, input_size: int = 320, landmarks: Path | None = None) -> FaceDetector:
    """The detector used to align training crops (an exported ONNX, or a training checkpoint), followed by the
    landmark refiner when given, exactly as at runtime."""
    from edge_mtl.runtime.landmarks import LandmarkRefiner
    from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine

    refiner = LandmarkRefiner(OnnxRuntimeEngine(landmarks)) if landmarks else None
    if path.suffix == ".onnx":
        return FaceDetector(OnnxRuntimeEngine(path), input_size=input_size, score_threshold=0.3, refiner=refiner)
    from edge_mtl.models.checkpoint import load_checkpoint
    from edge_mtl.models.detector import Detector, DetectorArgs, DetectorExport
    from edge_mtl.models.metadata import detector_metadata

    st = load_checkpoint(path)
    args = DetectorArgs.from_dict(st["model_args"]["detector"])
    model = Detector(args)
    model.load_state_dict(st["model"])
    engine = TorchEngine(DetectorExport(model), detector_metadata(args.to_dict()))
    return FaceDetector(engine, input_size=input_size, score_threshold=0.3, refiner=refiner)


def lfw_records(root: Path, pair_files: list[str]) -> list[S.FaceRecord]:
    names: list[str] = []
    for f in pair_files:
        for p in read_pairs(root / "lfw" / f):
            names += [p.a, p.b]
    uniq = sorted(set(names))
    base = root / "lfw" / "images_deepfunneled"
    return [S.FaceRecord("lfw", str(base / n), n) for n in uniq]


def subsample(recs: list[S.FaceRecord], n: int, seed: int) -> list[S.FaceRecord]:
    """A seeded subset of about `n` faces. Identity-labelled sources are subsampled by whole identities, so the
    margin loss still sees several images of each identity it keeps."""
    rng = np.random.default_rng(seed)
    if any(r.identity for r in recs):
        by_id: dict[str, list[int]] = {}
        for i, r in enumerate(recs):
            by_id.setdefault(r.identity or f"none:{i}", []).append(i)
        keep: list[int] = []
        for k in rng.permutation(sorted(by_id)):
            if len(keep) >= n:
                break
            keep += by_id[str(k)]
        return [recs[i] for i in sorted(keep[:n])]
    return [recs[i] for i in sorted(rng.choice(len(recs), n, replace=False))]


def apply_gender_labels(records: list[S.FaceRecord], label_files: list[Path]) -> set[str]:
    """Give the records the gender of hand-labelled files (`S.read_gender_labels`), by key, over any label they
    had; returns the keys labelled. A key of the files that no record holds is an InputError: the files belong
    to another copy of the data, or to a source left out of the run."""
    by_key = {r.key: r for r in records}
    done: set[str] = set()
    for f in label_files:
        labels = S.read_gender_labels(f)
        unknown = sorted(set(labels) - set(by_key))
        if unknown:
            raise InputError(f"{f}: {len(unknown)} labelled faces are in none of the sources (first: {unknown[0]})")
        for key, g in labels.items():
            by_key[key].gender = g
        done |= set(labels)
        log.info("%s: %d faces labelled (%d women)", f, len(labels), sum(labels.values()))
    return done


def oversample_young(samples: list[RecSample], below: float, factor: int) -> list[RecSample]:
    """Each face with an age label under `below` years repeated `factor` times (appended after the originals)."""
    if below <= 0 or factor <= 1:
        return samples
    young = [s for s in samples if 0 <= s.age < below]
    log.info("oversampling %d faces younger than %g years x%d", len(young), below, factor)
    return samples + young * (factor - 1)


class PartlyFrozen(nn.ModuleDict):
    """The task's modules, of which `frozen` stay in eval mode whatever `train()` asks: a frozen BatchNorm keeps
    its running statistics and normalises with them, so frozen outputs stay exactly those of the start."""

    def __init__(self, modules: dict[str, nn.Module], frozen: list[nn.Module]) -> None:
        super().__init__(modules)
        self._frozen = list(frozen)

    def train(self, mode: bool = True) -> PartlyFrozen:
        super().train(mode)
        for m in self._frozen:
            m.eval()
        return self


def freeze_except_heads(model: nn.Module, heads: Sequence[str]) -> list[nn.Module]:
    """Stop gradients to everything of a hard-shared recognizer but the named heads; returns the frozen modules."""
    if not isinstance(model, Recognizer):
        raise InputError("train_heads: only a hard-shared recognizer (one backbone) can train its heads alone")
    frozen: list[nn.Module] = [model.backbone, *(m for k, m in model.heads.items() if k not in heads)]
    for m in frozen:
        for q in m.parameters():
            q.requires_grad_(False)
    return frozen


def teacher_gender(rec: S.FaceRecord, soft: dict[str, npt.NDArray[np.float32]]) -> float:
    """The gender teacher's P(female) for a face that has no gender label; NaN for a labelled face (its own label
    is better than a 93-96% teacher's) or one the teacher did not see."""
    if rec.gender is not None or rec.key not in soft:
        return float("nan")
    return float(soft[rec.key][0])


def center_teacher(emb: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
    """Subtract the teacher's mean embedding and re-normalise.

    dlib's embeddings all point roughly the same way (mean cosine between random faces about 0.83), so a cosine
    distillation loss on them is mostly satisfied by predicting that common direction and carries little identity
    signal. Centred, random pairs are near-orthogonal (mean cosine about 0) and the loss measures what tells faces
    apart.
    """
    e = np.asarray(emb, np.float64)
    c = e - e.mean(axis=0, keepdims=True)
    return (c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-9)).astype(np.float32)


class RecognizerTask:
    main_metric = "lfw_dev_10fold_accuracy"
    higher_is_better = True

    def __init__(self, cfg: TrainConfig, detector: Path | None = None) -> None:
        assert isinstance(cfg.task, RecognizerTrain)
        self.cfg = cfg
        t: RecognizerTrain = cfg.task
        self.t = t
        root = data_root(cfg.data.shared)
        if root is None:
            raise InputError("recognizer training needs ../shared/data (set data.shared or EDGE_MTL_DATA)")
        self.root = root
        if cfg.data.crops is None:
            raise InputError("recognizer training needs data.crops (a folder for the aligned crop cache)")
        det_path = detector or t.detector
        self.detector = load_detector(Path(det_path), landmarks=t.landmarks) if det_path else None
        self.crop_dir = Path(cfg.data.crops)
        self.args = RecognizerArgs(
            widths=t.model.widths,
            depths=t.model.depths,
            embedding_dim=t.model.embedding_dim,
            embedding_hidden=t.model.embedding_hidden,
            fill=t.model.fill,
        )
        self.model: nn.Module = SoftSharedRecognizer(self.args) if t.sharing == "soft" else Recognizer(self.args)
        self._build_data()
        loss_tasks = [x for x in t.tasks if x in LOSS_TASKS]
        self.loss_tasks = loss_tasks
        self.margin = (
            MarginHead(self.args.embedding_dim, self.n_classes, t.margin, t.margin_s, t.margin_m)
            if "identity" in loss_tasks and self.n_classes
            else None
        )
        self.weighting = make_weighting(t.weighting, loss_tasks, t.static_weights)
        self._modules = PartlyFrozen({"model": self.model, "weighting": self.weighting},
                                     freeze_except_heads(self.model, t.train_heads) if t.train_heads else [])
        if self.margin is not None:
            self._modules["margin"] = self.margin
        self._mean = torch.tensor(REC_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(REC_STD).view(1, 3, 1, 1)
        self._epoch_sums: dict[str, float] = {}
        self._epoch_n = 0

    # ------------------------------------------------------------ data
    def _crops(self, name: str, records: list[S.FaceRecord]) -> CropSet:
        """The crop cache of exactly `records` (row i is record i's face): built with the detector when absent; an
        InputError when a cache of that name holds other faces (a source folder or exclusion list that changed
        since it was built would otherwise pair labels with the wrong crops)."""

        def detector() -> FaceDetector:
            if self.detector is None:
                raise InputError(f"no crop cache for {name} in {self.crop_dir} and no detector to make one")
            return self.detector

        # with a fill, a cache from before image sizes were kept gets them: they serve the fill
        return ensure_source(records, detector, self.crop_dir, name, f"the {name} source's records",
                             sizes=bool(self.args.fill))

    def _source_records(self, name: str, read: dict[str, Any]) -> list[S.FaceRecord]:
        """The records of source `name`. `read` holds what one `_build_data` has read already (the UTKFace
        exclusions, naheri's faces, CelebA_Samples' images), so that no folder is listed twice."""
        d, root = self.cfg.data, self.root

        def once(key: str, fn: Callable[[], Any]) -> Any:
            if key not in read:
                read[key] = fn()
            return read[key]

        def utk_exclude() -> list[str]:
            reserved = S.read_name_list(root / "utkface_reserved.txt")
            _, utk_val = S.utkface_split(root / "utkface", self.t.utk_val_fraction, self.t.utk_split_seed)
            return [*reserved, *utk_val]

        def naheri() -> list[S.FaceRecord]:  # every naheri face, none excluded
            return S.celeba_gender(d.celeba_gender or "", d.celeba_identity_file)

        if name == "celeba_crops":
            return S.celeba_crops(root / "celeba_crops")
        if name == "celeba_samples" and d.celeba_samples:
            recs: list[S.FaceRecord] = once("celeba_samples", lambda: S.celeba_samples(d.celeba_samples or ""))
            if self.t.celeba_samples_gender:
                if not (d.celeba_gender and d.celeba_identity_file):
                    raise InputError("celeba_samples_gender needs data.celeba_gender and data.celeba_identity_file")
                by_id = S.gender_by_identity(once("naheri", naheri))
                for r in recs:
                    r.gender = by_id.get(r.identity or "")
                log.info("celeba_samples: %d of %d faces labelled by identity", sum(r.gender is not None for r in recs),
                         len(recs))
            return recs
        if name == "utkface":
            return S.utkface(root / "utkface", "utkface", exclude=once("utk_exclude", utk_exclude))
        if name == "utkface_full" and d.utkface_full:
            return S.utkface(d.utkface_full, "utkface_full", exclude=once("utk_exclude", utk_exclude))
        if name == "celeba_gender" and d.celeba_gender:
            used = set()
            if d.celeba_samples:
                samples = once("celeba_samples", lambda: S.celeba_samples(d.celeba_samples or ""))
                used = {str(r.extra["celeba_image"]) for r in samples}
            # naheri's faces less CelebA_Samples' images: what `exclude_images=used` gives, in the same order
            return [r for r in once("naheri", naheri) if r.extra["celeba_image"] not in used]
        if name == "caltech":
            cal = S.caltech(root / "caltech_webfaces")
            return [r for recs in cal.values() for r in recs]
        if name == "maskon" and d.maskon_images and d.maskon_annotations:
            return S.maskon_faces(d.maskon_images, d.maskon_annotations)
        log.warning("source %s is not configured; skipped", name)
        return []

    def _build_data(self) -> None:
        t = self.t
        teacher_map = load_targets(self.cfg.data.teacher) if self.cfg.data.teacher else {}
        crops: list[Path] = []
        geometry: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]] = []
        pending: list[tuple[int, S.FaceRecord, int]] = []
        read: dict[str, Any] = {}
        for name in t.sources:
            recs = self._source_records(name, read)
            if t.max_per_source and len(recs) > t.max_per_source:
                recs = subsample(recs, t.max_per_source, self.cfg.seed)
                cs = self._crops(f"{name}-{t.max_per_source}", recs)
            else:
                cs = self._crops(name, recs)
            src = len(crops)
            crops.append(cs.path)
            if self.args.fill:
                assert cs.landmarks is not None and cs.sizes is not None  # _crops made sure of the sizes
                geometry.append((cs.landmarks, cs.sizes))
            for row, (rec, status) in enumerate(zip(recs, cs.status, strict=True)):
                if status == "missing":
                    continue
                pending.append((src, rec, row))
        labelled = apply_gender_labels([r for _, r, _ in pending], t.gender_labels) if t.gender_labels else set()
        ident_counts = Counter(r.identity for _, r, _ in pending if r.identity)
        keep = sorted(i for i, c in ident_counts.items() if c >= t.min_images_per_identity)
        self.classes = {k: i for i, k in enumerate(keep)}
        self.n_classes = len(keep) if "identity" in t.tasks else 0
        keys = sorted({r.key for _, r, _ in pending if r.key in teacher_map}) if "distill" in t.tasks or \
            "quality" in t.tasks else []
        if self.cfg.data.teacher and "distill" in t.tasks and not keys:
            raise InputError(f"{self.cfg.data.teacher}: none of the training faces has a teacher embedding there "
                             f"(extracted for other sources than {', '.join(t.sources)}?)")
        trow = {k: i for i, k in enumerate(keys)}
        self.teacher = center_teacher(np.stack([teacher_map[k] for k in keys])) if keys else None
        soft: dict[str, npt.NDArray[np.float32]] = {}
        if t.gender_teacher_weight > 0 and "gender" in t.tasks:
            if self.cfg.data.gender_teacher is None:
                raise InputError("gender_teacher_weight needs data.gender_teacher (soft gender labels)")
            soft = load_targets(self.cfg.data.gender_teacher)
        samples = []
        for src, rec, row in pending:
            samples.append(
                RecSample(
                    source=src,
                    row=row,
                    identity=self.classes.get(rec.identity, -1) if rec.identity and self.n_classes else -1,
                    age=float(rec.age) if rec.age is not None and "age" in t.tasks else -1.0,
                    gender=int(rec.gender) if rec.gender is not None and "gender" in t.tasks else -1,
                    teacher=trow.get(rec.key, -1),
                    gender_soft=teacher_gender(rec, soft),
                )
            )
        hand_labelled = [s for s, (_, rec, _) in zip(samples, pending, strict=True) if rec.key in labelled]
        samples = oversample_young(samples, t.oversample_age_below, t.oversample_factor)
        samples += hand_labelled * (t.gender_labels_repeat - 1)
        if t.rebalance_power < 1 or t.group_weights:
            from edge_mtl.train.data.rebalance import rebalanced

            names = {(src, row): Path(rec.path).name for src, rec, row in pending if rec.source.startswith("utkface")}
            samples = rebalanced(samples, [names.get((s.source, s.row)) for s in samples], t.rebalance_power,
                                 t.group_weights, t.rebalance_max_repeat, self.cfg.seed)
        log.info(
            "recognizer data: %d faces, %d identity classes, %d with teacher, %d with age, %d with gender, "
            "%d with a teacher's gender", len(samples), self.n_classes, sum(s.teacher >= 0 for s in samples),
            sum(s.age >= 0 for s in samples), sum(s.gender >= 0 for s in samples),
            sum(not np.isnan(s.gender_soft) for s in samples),
        )
        self.dataset = RecognizerDataset(crops, samples, self.teacher, train=True, seed=self.cfg.seed,
                                         wild_p=t.wild_augment, tight_p=t.tight_augment, fill=self.args.fill,
                                         geometry=geometry or None)
        self.collate = None
        # validation sets
        root = self.root
        self.lfw_pairs = {f: read_pairs(root / "lfw" / f) for f in ("pairsDevTrain.txt", "pairsDevTest.txt")}
        lfw = lfw_records(root, list(self.lfw_pairs))
        self.lfw = self._crops("lfw_dev", lfw)
        self.lfw_index = self.lfw.index()
        _, utk_val = S.utkface_split(root / "utkface", t.utk_val_fraction, t.utk_split_seed)
        val_recs = [r for r in S.utkface(root / "utkface", "utkface") if Path(r.path).name in set(utk_val)]
        self.utk_val_recs = val_recs
        self.utk_val = self._crops(f"utk_val_{t.utk_split_seed}", val_recs)

    # ------------------------------------------------------------ training
    def train_modules(self) -> nn.Module:
        return self._modules

    def on_epoch_start(self, epoch: int) -> None:
        if self._epoch_n:
            self.weighting.end_epoch({k: v / self._epoch_n for k, v in self._epoch_sums.items()})
        self._epoch_sums, self._epoch_n = {}, 0
        self.dataset.set_epoch(epoch)

    def shared_params(self) -> list[torch.Tensor]:
        m = self.model
        if isinstance(m, Recognizer):
            last_stage = m.backbone.stages[-1]
            assert isinstance(last_stage, nn.Sequential)
            return list(last_stage[-1].parameters())
        return list(m.parameters())

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of uint8 RGB crops (N x 3 x 112 x 112) as the network's normalised input."""
        return (images.float() - self._mean) / self._std

    def training_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x = self._input(batch["image"])
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            raw = self.model(x)
        out = {k: v.float() for k, v in raw.items()}
        emb = out["embedding"]
        teacher = batch["teacher"]
        has_t = ~torch.isnan(teacher).any(1)
        losses: dict[str, torch.Tensor] = {}
        extra: dict[str, torch.Tensor] = {}
        if "identity" in self.loss_tasks:
            if self.margin is not None:
                losses["identity"], acc = self.margin(emb, batch["identity"])
                if not torch.isnan(acc):
                    extra["acc_identity"] = acc
            else:
                losses["identity"] = emb.sum() * 0
        if "distill" in self.loss_tasks:
            losses["distill"] = distill_loss(emb, teacher, has_t)
        if "age" in self.loss_tasks:
            losses["age"] = age_loss(out["age"], batch["age"], batch["age"] >= 0, self.t.age_sigma)
        if "gender" in self.loss_tasks:
            losses["gender"] = gender_loss(out["gender"], batch["gender"], batch["gender"] >= 0)
            if self.t.gender_teacher_weight > 0:
                soft = batch["gender_soft"]
                losses["gender"] = losses["gender"] + self.t.gender_teacher_weight * soft_gender_loss(
                    out["gender"], soft, ~torch.isnan(soft))
        if "quality" in self.loss_tasks:
            with torch.no_grad():
                cos = (torch.nn.functional.normalize(emb.detach(), dim=1)
                       * torch.nn.functional.normalize(torch.nan_to_num(teacher), dim=1)).sum(1)
                target = ((cos - 0.2) / 0.7).clamp(0, 1)
            losses["quality"] = quality_loss(out["quality"], target, has_t)
        shared = self.shared_params() if self.weighting.needs_shared else None
        total, weights = self.weighting.combine(losses, shared)
        if isinstance(self.model, SoftSharedRecognizer):
            pen = self.model.soft_penalty()
            total = total + self.t.soft_l2 * pen
            extra["soft_penalty"] = pen.detach()
        res = {"loss": total}
        for k, v in losses.items():
            res[f"loss_{k}"] = v.detach()
            self._epoch_sums[k] = self._epoch_sums.get(k, 0.0) + float(v.detach())
        self._epoch_n += 1
        for k, w in weights.items():
            res[f"w_{k}"] = torch.tensor(w)
        res.update(extra)
        return res

    def init_from_deploy(self, path: Path, calib_batches: int = 24) -> None:
        """Fine-tune from a shipped deploy ONNX: unfold its weights (BatchNorms calibrated on `calib_batches`
        training batches, `edge_mtl.train.post.recover`), then imprint the margin-loss class centres from the recovered
        model's embeddings of each identity's clean crops. The loss-weighting state starts afresh."""
        from torch.utils.data import DataLoader, Subset

        from edge_mtl.train.post.recover import imprint_centres, recover_recognizer

        if not isinstance(self.model, Recognizer):
            raise ModelError(f"{path}: a soft-sharing run cannot start from a deploy model (one backbone)")
        bs = self.cfg.optim.batch_size
        rng = np.random.default_rng(self.cfg.seed)
        pick = rng.choice(len(self.dataset), min(len(self.dataset), calib_batches * bs), replace=False)
        loader = DataLoader(Subset(self.dataset, pick.tolist()), batch_size=bs)
        batches = [self._input(b["image"]) for b in loader]
        model = recover_recognizer(path, batches, check=batches[0][:32])
        if replace(model.args, fill=self.args.fill) != self.args:  # the fill is the data's, not the weights'
            raise ModelError(f"{path}: a recognizer with {model.args}, not the {self.args} this config builds")
        self.model.load_state_dict(model.state_dict())
        if self.margin is None:
            return
        ident = sorted({(s.source, s.row, s.identity) for s in self.dataset.samples if s.identity >= 0})
        clean = RecognizerDataset(
            self.dataset.crop_paths, [RecSample(source=a, row=b, identity=c) for a, b, c in ident], None, train=False,
            fill=self.dataset.fill, geometry=self.dataset.geometry,
        )
        embs, labels = [], []
        self.model.eval()
        with torch.no_grad():
            for b in DataLoader(clean, batch_size=256, num_workers=self.cfg.workers):
                x = self._input(b["image"])
                with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
                    embs.append(self.model(x)["embedding"].float())
                labels.append(b["identity"])
        self.model.train()
        self.margin.weight.data.copy_(imprint_centres(torch.cat(embs), torch.cat(labels), self.n_classes))
        log.info("imprinted %d margin-loss class centres from %d faces", self.n_classes, len(ident))

    # ------------------------------------------------------------ validation
    def recognizer(self) -> FaceRecognizer:
        engine = TorchEngine(RecognizerExport(self.model), recognizer_metadata(self.args.to_dict()))  # type: ignore[arg-type]
        return FaceRecognizer(engine, max_batch=128)

    def validate(self) -> dict[str, float]:
        rec = self.recognizer()
        res: dict[str, float] = {}
        lfw = rec.analyze(self.lfw.rendered(self.args.fill))
        dev = self.lfw_pairs
        v1 = view1(lfw.embeddings, self.lfw_index, dev["pairsDevTrain.txt"], dev["pairsDevTest.txt"])
        res["lfw_dev_accuracy"] = v1.accuracy
        res["lfw_dev_threshold"] = v1.threshold
        # the steadier figure (all 3,200 View 1 pairs in 10 folds, threshold from the other nine) that the
        # selection rules of export/recognizer.md use (benchmarks/recognizer_view1.py `view1_10fold_accuracy`);
        # best.pt follows it
        res["lfw_dev_10fold_accuracy"] = v1.ten_fold_accuracy
        utk = rec.analyze(self.utk_val.rendered(self.args.fill))
        m = attribute_metrics(
            [float(r.age or 0) for r in self.utk_val_recs], utk.age_years,
            [int(r.gender or 0) for r in self.utk_val_recs], utk.female_prob,
        )
        res["utk_age_mae"] = float(m["age_mae"])  # type: ignore[arg-type]
        res["utk_gender_accuracy"] = float(m["gender_accuracy"])  # type: ignore[arg-type]
        res["quality_mean_lfw"] = round(float(lfw.quality.mean()), 4)
        self.model.train()
        return res

    def model_args(self) -> dict[str, Any]:
        return {"recognizer": self.args.to_dict(), "sharing": self.t.sharing}

    def extra_state(self) -> dict[str, Any]:
        return {
            "weighting": self.weighting.state_dict(),
            "margin": self.margin.state_dict() if self.margin is not None else None,
            "classes": self.classes,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("weighting"):
            self.weighting.load_state_dict(state["weighting"])
        if state.get("margin") and self.margin is not None:
            if state.get("classes", self.classes) != self.classes:
                log.warning("checkpoint's identity classes differ from this run's: margin-loss centres start afresh")
            else:
                self.margin.load_state_dict(state["margin"])
