"""Training configuration (TOML), validated like the daemon's: unknown keys and out-of-range values are errors.

Paths to the larger public datasets are settings: a user reproduces a run by cloning the same repository at the
commit named in the model card and pointing these at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from edge_mtl.config import Strict


class DataPaths(Strict):
    shared: Path | None = Field(None, description="../shared/data (default: $EDGE_MTL_DATA or ../shared/data).")
    celeba_samples: Path | None = Field(
        None, description="ShaharKSegal/CelebA_Samples @ 2a68dac5: celeba_identity_samples/"
    )
    celeba_identity_file: Path | None = Field(None, description="CelebA_Samples/identity_CelebA.txt")
    celeba_gender: Path | None = Field(None, description="naheri/gender_detection @ e8883ee2: datasets/dataset/")
    utkface_full: Path | None = Field(None, description="mattans/AgeProgression @ 2d937c61: data/UTKFace/unlabeled/")
    wider_images: Path | None = Field(None, description="himanshuchopade97/Crowd-Counting: widerface/images/train")
    wider_labels: Path | None = Field(None, description="himanshuchopade97/Crowd-Counting: widerface/labels/train")
    maskon_images: Path | None = Field(None, description="marellanoc/MaskON @ b6c6b2da: archive/images")
    maskon_annotations: Path | None = Field(None, description="marellanoc/MaskON: archive/annotations")
    teacher: Path | None = Field(None, description="Teacher embeddings from `edge_mtl.train.data.teacher`.")
    crops: Path | None = Field(None, description="Cache of aligned 112x112 training crops.")
    gender_teacher: Path | None = Field(
        None, description="Soft gender labels (P(female)) from `edge_mtl.train.data.teacher --gender-teacher`."
    )


class OptimConfig(Strict):
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0, le=10)
    weight_decay: float = Field(0.05, ge=0, le=1)
    epochs: int = Field(30, ge=1, le=10000)
    batch_size: int = Field(32, ge=2, le=4096)
    warmup_steps: int = Field(300, ge=0)
    grad_clip: float = Field(10.0, ge=0)
    max_steps: int | None = Field(None, ge=1, description="Stop early after this many steps (smoke tests).")
    lr_scales: dict[str, Annotated[float, Field(gt=0, le=100)]] = Field(
        default_factory=dict,
        description="Learning-rate multipliers by parameter-name prefix of the task's trained modules, e.g. "
        "{ \"model.backbone\" = 0.1 } fine-tunes a backbone ten times slower than its heads. The longest matching "
        "prefix wins; each prefix must name at least one trained parameter.",
    )


class DetectorModelConfig(Strict):
    widths: tuple[int, int, int, int, int] = (16, 32, 64, 96, 128)
    depths: tuple[int, int, int, int] = (1, 2, 2, 2)
    neck: int = Field(48, ge=8, le=512)
    head_convs: int = Field(2, ge=0, le=8)


class DetectorTrain(Strict):
    kind: Literal["detector"] = "detector"
    model: DetectorModelConfig = Field(default_factory=DetectorModelConfig)
    size: int = Field(320, ge=64, le=2048, description="Side of the square training crops.")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Caltech images held out (split by image).")
    split_seed: int = 0
    sources: list[Literal["caltech", "wider", "maskon"]] = Field(default_factory=lambda: ["caltech"])  # type: ignore[arg-type]
    loss_weights: tuple[float, float, float] = Field((1.0, 2.0, 0.2), description="cls, box, landmarks")
    crop_scales: tuple[float, float] = Field(
        (0.3, 1.6), description="Training crop side as a range of multiples of the image's short side (>1 zooms out)."
    )
    score_target_power: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Score target of a positive is IoU**p (1: quality focal loss; smaller: a score less tied to "
        "how well the box fits, i.e. more confident on small faces).",
    )
    val_size: int = Field(480, ge=64, le=4096, description="Long side at validation.")
    val_limit: int = Field(0, ge=0, description="Validate on at most this many images (0: all).")


class RecognizerModelConfig(Strict):
    widths: tuple[int, int, int, int] = (32, 64, 128, 224)
    depths: tuple[int, int, int, int] = (1, 2, 6, 2)
    embedding_dim: int = Field(128, ge=16, le=1024)
    embedding_hidden: int = Field(320, ge=16, le=2048)
    fill: int = Field(
        0, ge=0, le=255,
        description="Grey level of the aligned crops beyond their images (a face at a frame's edge, a face cut at its "
        "box), in training and, declared by the exported file, at run time: 0 black (every model up to "
        "recognizer-1.6); 128 neutral (what the input scaling maps to 0).",
    )


class RecognizerTrain(Strict):
    kind: Literal["recognizer"] = "recognizer"
    model: RecognizerModelConfig = Field(default_factory=RecognizerModelConfig)
    tasks: list[Literal["identity", "distill", "age", "gender", "quality"]] = Field(
        default_factory=lambda: ["identity", "distill", "age", "gender", "quality"]  # type: ignore[arg-type]
    )
    sources: list[
        Literal["celeba_crops", "celeba_samples", "celeba_gender", "utkface", "utkface_full", "caltech", "maskon"]
    ] = Field(
        default_factory=lambda: ["celeba_crops", "celeba_samples", "utkface_full", "celeba_gender", "caltech"]  # type: ignore[arg-type]
    )
    weighting: Literal["static", "uncertainty", "dwa", "gradnorm"] = "static"
    static_weights: dict[str, float] = Field(
        default_factory=lambda: {"identity": 1.0, "distill": 4.0, "age": 0.5, "gender": 1.0, "quality": 0.5}
    )
    sharing: Literal["hard", "soft"] = "hard"
    soft_l2: float = Field(1e-3, ge=0, description="Soft sharing: L2 penalty tying the per-task backbones.")
    margin: Literal["arcface", "cosface"] = "cosface"
    margin_s: float = Field(32.0, gt=0, le=128)
    margin_m: float = Field(0.3, ge=0, le=1)
    min_images_per_identity: int = Field(2, ge=1, description="Identities with fewer images get no class.")
    age_sigma: float = Field(2.5, gt=0, le=20, description="Std (years) of the label distribution for age.")
    utk_val_fraction: float = Field(0.15, gt=0, lt=1)
    utk_split_seed: int = 0
    max_per_source: int = Field(0, ge=0, description="Cap images per source (0: all), for quick runs.")
    oversample_age_below: float = Field(
        0.0, ge=0, le=100, description="Faces with an age label below this (years) are seen `oversample_factor` "
        "times per epoch (0: off); children are scarce in the training data and their gender is the hardest."
    )
    oversample_factor: int = Field(1, ge=1, le=20)
    rebalance_power: float = Field(
        1.0, ge=0, le=1, description="UTKFace faces rebalanced by race x age x gender "
        "(edge_mtl.train.data.rebalance): a group of n faces is seen (n_max / n)^(1 - power) times per epoch "
        "(1: off, 0: every group equal)."
    )
    group_weights: dict[str, float] = Field(
        default_factory=dict, description="Extra repeats for the groups with these parts (a race, child / adult / "
        "60+, female / male), multiplied: e.g. {female = 1.5, \"60+\" = 1.5, child = 1.5}."
    )
    rebalance_max_repeat: float = Field(6.0, ge=1, le=50, description="At most this many repeats of a face.")
    wild_augment: float = Field(
        0.0, ge=0, le=1, description="Probability of each in-the-wild augmentation (colour cast, yaw warp) per face."
    )
    tight_augment: float = Field(
        0.0, ge=0, le=1, description="Probability of cutting a face at its box (black outside it, as an aligned ID "
        "photo or tight crop looks: edge_mtl.train.data.recognizer.tight_cut)."
    )
    gender_teacher_weight: float = Field(
        0.0, ge=0, le=10, description="Weight of the gender teacher's soft labels (`data.gender_teacher`) on the "
        "faces that have no gender label, beside the hard labels' cross-entropy (0: off)."
    )
    celeba_samples_gender: bool = Field(
        False, description="Give CelebA_Samples faces a gender label by identity: the majority of that identity's "
        "`celeba_gender` labels where at least 80% agree (needs data.celeba_gender and data.celeba_identity_file)."
    )
    gender_labels: list[Path] = Field(
        default_factory=list, description="Hand-labelled gender files (lines `KEY M|F|?`, e.g. "
        "configs/labels/caltech_gender.txt) that give faces of the sources above, by crop key, a gender label; "
        "a key no source holds is an error (the labels belong to another copy of the data)."
    )
    gender_labels_repeat: int = Field(
        1, ge=1, le=50, description="Faces labelled by `gender_labels` are seen this many times per epoch (a few "
        "thousand faces from the wild beside about a hundred thousand chips and celebrities)."
    )
    train_heads: list[Literal["embedding", "age", "gender", "quality"]] = Field(
        default_factory=list, description="Train only these heads: the backbone and the other heads stay frozen, "
        "BatchNorm statistics included, so their outputs stay those of `init` (empty: train everything)."
    )
    val_every: int = Field(1, ge=1)
    detector: Path | None = Field(
        None, description="Detector (ONNX or checkpoint) that aligns the training crops; needed to build the cache."
    )
    landmarks: Path | None = Field(
        None, description="Landmark refiner ONNX applied after the detector (as at runtime) when building crops."
    )


class LandmarkModelConfig(Strict):
    size: int = Field(64, ge=32, le=256)
    widths: tuple[int, int, int, int] = (24, 48, 64, 96)


class LandmarkTrain(Strict):
    kind: Literal["landmarks"] = "landmarks"
    model: LandmarkModelConfig = Field(default_factory=LandmarkModelConfig)
    detector: Path | None = Field(None, description="Detector ONNX used to measure the refined landmarks on val.")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Caltech images held out (same split as the detector).")
    split_seed: int = 0
    noise_min: float = Field(0.02, ge=0, le=1, description="Smallest simulated landmark error (x inter-ocular).")
    noise_max: float = Field(0.15, ge=0, le=1, description="Largest simulated landmark error (x inter-ocular).")
    min_iod: float = Field(8.0, ge=0, description="Faces with a smaller annotated inter-ocular distance are skipped.")
    iterations: int = Field(2, ge=1, le=5, description="Refinement passes at validation (and runtime).")
    val_every: int = Field(5, ge=1, description="Validate every this many epochs (and after the last).")


class TrainConfig(Strict):
    """`edge-mtl train --config FILE`."""

    out: Path = Field(Path("runs/train"), description="Run folder: checkpoints, metrics.jsonl, exports.")
    seed: int = 0
    workers: int = Field(1, ge=0, le=64, description="Data-loading worker processes.")
    threads: int = Field(0, ge=0, le=256, description="torch intra-op threads (0: default).")
    bf16: bool = Field(
        False, description="bfloat16 autocast for the forward pass (CPUs with AVX512-BF16/AMX, GPUs); losses in FP32."
    )
    checkpoint_every_s: float = Field(600.0, gt=0)
    keep_epochs: int = Field(
        0,
        ge=0,
        description="Also keep the checkpoint of each of the last N epochs as epoch_<n>.pt, for "
        "`edge-mtl average-checkpoints` (0: only last.pt and best.pt).",
    )
    init: Path | None = Field(
        None,
        description="Fine-tune: start from this checkpoint's weights (same kind and model args); the optimizer, "
        "schedule and epochs start afresh. A recognizer run may name a shipped fp32 deploy ONNX instead "
        "(export/recognizer.onnx): its weights are unfolded into the training form and the margin-loss class "
        "centres imprinted. Ignored when `out` already has a last.pt to resume.",
    )
    init_version: str | None = Field(
        None,
        description="With an ONNX `init`: the model version that file must carry (its metadata `version`, e.g. "
        "\"recognizer-1.4\"). export/ moves on with every release, so a config written against one release "
        "refuses to start from the next instead of silently training from it.",
    )
    init_optimizer: bool = Field(
        False,
        description="With `init`: also carry that checkpoint's optimizer state (AdamW moments), so that a "
        "continuation does not restart from zero moments; lr, weight decay and schedule are this run's. Needs a "
        "checkpoint with optimizer state (last.pt or epoch_N.pt, not an average) from the same optimizer and model.",
    )
    data: DataPaths = Field(default_factory=DataPaths)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    task: Annotated[DetectorTrain | RecognizerTrain | LandmarkTrain, Field(discriminator="kind")]

    @model_validator(mode="after")
    def _deploy_init_is_a_hard_shared_recognizer(self) -> TrainConfig:
        deploy = self.init is not None and self.init.suffix == ".onnx"
        if deploy and (not isinstance(self.task, RecognizerTrain) or self.task.sharing != "hard"):
            raise ValueError("init: only a hard-shared recognizer run can start from a deploy ONNX")
        if self.init_version is not None and not deploy:
            raise ValueError("init_version: only for an init that names a deploy ONNX (a checkpoint has no version)")
        if self.init_optimizer and (self.init is None or deploy):
            raise ValueError("init_optimizer: needs init naming a training checkpoint (not a deploy ONNX)")
        return self
