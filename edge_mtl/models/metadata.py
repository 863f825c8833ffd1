"""The metadata each exported model carries: preprocessing, outputs, template, provenance (docs/architecture.md,
rule 4).

Kept free of torch so the runtime and the build tools share one definition.
"""

from __future__ import annotations

from typing import Any

from edge_mtl.runtime.engine import ModelMetadata
from edge_mtl.vision.align import TEMPLATE_4

DETECTOR_STRIDES = (8, 16, 32)
DET_MEAN = (127.5, 127.5, 127.5)
DET_STD = (128.0, 128.0, 128.0)
REC_MEAN = (127.5, 127.5, 127.5)
REC_STD = (127.5, 127.5, 127.5)
RECOGNIZER_OUTPUTS = ("embedding", "age", "gender", "quality")


def detector_output_names() -> list[str]:
    return [f"{kind}_{s}" for s in DETECTOR_STRIDES for kind in ("score", "box", "kps")]


def detector_metadata(
    args: dict[str, Any], version: str = "dev", provenance: str = "", precision: str = "fp32"
) -> ModelMetadata:
    return ModelMetadata(
        kind="detector",
        version=version,
        input_name="input",
        output_names=tuple(detector_output_names()),
        color="RGB",
        mean=DET_MEAN,
        std=DET_STD,
        input_size=640,
        strides=DETECTOR_STRIDES,
        points=int(args.get("points", 4)),
        precision=precision,
        args=args,
        provenance=provenance,
    )


def recognizer_metadata(
    args: dict[str, Any], version: str = "dev", provenance: str = "", precision: str = "fp32"
) -> ModelMetadata:
    return ModelMetadata(
        kind="recognizer",
        version=version,
        input_name="input",
        output_names=RECOGNIZER_OUTPUTS,
        color="RGB",
        mean=REC_MEAN,
        std=REC_STD,
        input_size=int(args.get("input_size", 112)),
        points=4,
        template=tuple((float(x), float(y)) for x, y in TEMPLATE_4),
        precision=precision,
        args=args,
        provenance=provenance,
    )


LANDMARK_OUTPUTS = ("offsets",)


def landmarks_metadata(
    args: dict[str, Any], version: str = "dev", provenance: str = "", precision: str = "fp32"
) -> ModelMetadata:
    size = int(args.get("size", 64))
    return ModelMetadata(
        kind="landmarks",
        version=version,
        input_name="input",
        output_names=LANDMARK_OUTPUTS,
        color="RGB",
        mean=DET_MEAN,
        std=DET_STD,
        input_size=size,
        points=int(args.get("points", 4)),
        template=tuple((float(x) * size / 112.0, float(y) * size / 112.0) for x, y in TEMPLATE_4),
        precision=precision,
        args=args,
        provenance=provenance,
    )
