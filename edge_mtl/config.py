"""Typed configuration: pydantic models (extra keys forbidden, bounds, descriptions) loaded from TOML.

`load_config(path)` returns an `AppConfig` or raises `ConfigError` whose one-line message names the offending key
and its line in the file, which is what `edge-mtl check-config` prints before exiting 2.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_mtl import defaults as D
from edge_mtl.errors import ConfigError

_ENV_REF = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def expand_path(value: str, environ: Mapping[str, str] | None = None) -> str:
    """`~`, `$VAR`, `${VAR}` and `${VAR:-default}` in a configured path, as a shell would expand them (systemd's
    `$STATE_DIRECTORY`, a cache root per machine); an unset variable without a default is an error, never a
    literal `$VAR` folder. `$$` is a literal `$` (as in systemd units), and `./~` a literal leading `~`."""
    env = os.environ if environ is None else environ

    def sub(m: re.Match[str]) -> str:
        if m.group("dollar"):
            return "$"
        name = m.group("braced") or m.group("bare")
        if name in env and env[name] != "":
            return env[name]
        if m.group("default") is not None:
            return m.group("default")
        raise ValueError(f"environment variable {name} is not set (in {value!r}; ${{{name}:-default}} gives one)")

    out = _ENV_REF.sub(sub, value)
    return os.path.expanduser(out) if out.startswith("~") else out


def _is_path_type(tp: Any) -> bool:
    return tp is Path or any(_is_path_type(a) for a in get_args(tp))


class Strict(BaseModel):
    """Base: unknown keys are errors (a typo must not silently fall back to a default). Path settings written in a
    file expand `~` and environment variables (`expand_path`)."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _expand_paths(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if field is None or not _is_path_type(field.annotation):
                continue
            try:
                if isinstance(value, str):
                    out[name] = expand_path(value)
                elif isinstance(value, list):
                    out[name] = [expand_path(x) if isinstance(x, str) else x for x in value]
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
        return out


Backend = Literal["onnxruntime", "tensorrt", "torch"]
Device = Literal["cpu", "cuda", "tensorrt"]
Precision = Literal["fp32", "fp16", "int8"]


class BackendConfig(Strict):
    """How a model is run. `type` picks the plugin; a missing optional dependency names its extra."""

    type: Backend = Field("onnxruntime", description="Inference backend plugin.")
    device: Device = Field(
        "cpu",
        description="onnxruntime execution provider: cpu, cuda or tensorrt. Never replaced silently: if the "
        "provider asked for is not the one active, loading fails.",
    )
    precision: Precision = Field("fp32", description="Which exported variant to load (fp32, fp16 or int8 Q/DQ).")
    threads: int = Field(0, ge=0, le=256, description="Intra-op CPU threads (0: the runtime's default).")
    spin: bool = Field(
        False, description="Let onnxruntime's CPU threads spin-wait for work (off: they sleep; spinning cost 2.5x "
        "the CPU per detection beside the capture threads and was slower too: docs/performance.md)."
    )
    engine_cache: Path | None = Field(None, description="Folder for TensorRT engines and timing caches.")


class PadRetryConfig(Strict):
    pad: float = Field(
        0.25, ge=0.0, le=2.0, description="A face that fills the image (an ID photo, a tight crop) is detected again "
        "on the image with this border on every side (share of its longer side) and mapped back; 0: never.",
    )
    fill: float = Field(
        0.8, gt=0.0, le=1.0,
        description="Retry when the largest face's box spans at least this share of the image's width or height.",
    )
    border: Literal["replicate", "grey", "black"] = Field(
        "black", description="How the border is filled (black: as the training crops were padded)."
    )
    when_empty: Literal["stills", "always", "never"] = Field(
        "stills", description="Also retry when nothing was found: on still images (analyze, enroll; not camera "
        "frames, where an empty frame would pay a second detection), always, or never.",
    )
    when_touching: Literal["stills", "always", "never"] = Field(
        "stills", description="Also retry when a face's box touches the image's edge: on still images (not camera "
        "frames, where people walk out of the picture), always, or never.",
    )


class DetectorConfig(Strict):
    model: Path | None = Field(None, description="Detector ONNX; default: the shipped export/detector.onnx.")
    backend: BackendConfig = Field(default_factory=BackendConfig)
    input_size: int = Field(
        640, ge=128, le=4096, description="Frames are resized so their long side is this many pixels."
    )
    score_threshold: float | None = Field(
        None, gt=0.0, lt=1.0,
        description=f"Face score threshold; default {D.DETECTOR_SCORE_THRESHOLD}, "
        f"{D.DETECTOR_SCORE_THRESHOLD_INT8} with the int8 detector (it scores false objects higher). "
        "analyze and eval detection report the faces at or above it (eval's AP uses every score). In run it is "
        "the tracker's high threshold unless tracker.high_threshold is set: faces at or above it match tracks first "
        "and may open tracks; the detector itself runs down to tracker.low_threshold for the tracker's second stage.",
    )
    nms_threshold: float = Field(
        D.DETECTOR_NMS_THRESHOLD, gt=0.0, lt=1.0, description="IoU above which overlapping boxes merge."
    )
    min_face: int = Field(
        0, ge=0, le=4096, description="Drop faces whose box is narrower than this (input pixels)."
    )
    landmarks: Path | None = Field(
        None, description="Landmark refiner ONNX; default: the shipped export/landmarks.onnx when present."
    )
    refine_iterations: int = Field(
        2, ge=0, le=5, description="Landmark refinement passes per face (0: use the detector's own landmarks)."
    )
    pad_retry: PadRetryConfig = Field(default_factory=PadRetryConfig)

    def resolved_score_threshold(self) -> float:
        """score_threshold, or the default for the configured precision."""
        if self.score_threshold is not None:
            return self.score_threshold
        return D.detector_score_threshold(self.backend.precision)


class RecognizerConfig(Strict):
    model: Path | None = Field(None, description="Recognizer ONNX; default: the shipped export/recognizer.onnx.")
    backend: BackendConfig = Field(default_factory=BackendConfig)
    max_batch: int = Field(16, ge=1, le=256, description="Faces per inference call, batched across cameras.")
    flip: bool = Field(
        False, description="Test-time flip: also run each face mirrored and combine the two readings (mirror-"
        "invariant age, gender and embedding; twice the recognizer's cost per face)."
    )


class TrackerConfig(Strict):
    """ByteTrack-style tracker settings (see edge_mtl.track for what raising or lowering each does)."""

    high_threshold: float | None = Field(
        None, gt=0, lt=1,
        description="Detections at or above this match tracks first (scores are IoU-calibrated); default: the "
        "detector's score threshold (detector.score_threshold, else its per-precision default).",
    )
    low_threshold: float = Field(
        D.TRACK_LOW_THRESHOLD, gt=0, lt=1, description="Second-stage matches use detections above this."
    )
    new_track_threshold: float = Field(
        D.TRACK_NEW_THRESHOLD, gt=0, lt=1, description="Score needed to open a new track (higher: fewer ghost tracks)."
    )
    match_iou: float = Field(D.TRACK_MATCH_IOU, gt=0, lt=1, description="Minimum IoU for the first-stage match.")
    lost_frames: int = Field(
        D.TRACK_LOST_FRAMES, ge=1, le=10000, description="Frames a track survives unseen before it ends."
    )
    confirm_frames: int = Field(
        D.TRACK_CONFIRM_FRAMES, ge=1, le=100, description="Consecutive hits before a track is confirmed."
    )

    @model_validator(mode="after")
    def _ordered(self) -> TrackerConfig:
        if self.high_threshold is not None and self.low_threshold > self.high_threshold:
            raise ValueError("low_threshold must not exceed high_threshold")
        return self

    def tracker_options(self, detector_threshold: float) -> dict[str, Any]:
        """ByteTracker's keyword arguments, the high threshold resolved (`detector_threshold` when unset)."""
        opts = self.model_dump()
        if opts["high_threshold"] is None:
            opts["high_threshold"] = detector_threshold
        return opts


class RecognitionConfig(Strict):
    """When a track is (re)analysed by the recognizer."""

    every_n_frames: int = Field(15, ge=1, le=10000, description="Re-run on a track at least this often.")
    quality_gain: float = Field(
        0.05, ge=0, le=1, description="Re-run sooner when the face's box-based quality improves by this much."
    )
    min_face_px: int = Field(24, ge=8, le=1024, description="Faces with a smaller inter-ocular-based size wait.")


class AttributesConfig(Strict):
    """What the events say about age and gender."""

    gender_min_confidence: float = Field(
        D.GENDER_MIN_CONFIDENCE, ge=0.5, le=1.0,
        description="Events carry gender null while the track's aggregated gender confidence is below this "
        "(0.5: always report). Trade-off on UTKFace: export/recognizer.md.",
    )
    gender_min_age: float = Field(
        D.GENDER_MIN_AGE, ge=0, le=18,
        description="Events carry gender null while the track's aggregated age estimate is under this many years, "
        "whatever the confidence: an infant's face barely shows its sex (0: report at every age). Trade-off on "
        "UTKFace: export/recognizer.md.",
    )


class IdentityConfig(Strict):
    gallery: Path | None = Field(None, description="SQLite gallery of enrolled people (none: all unknown).")
    threshold: float | None = Field(
        None, gt=-1, lt=1,
        description="Cosine similarity needed to accept a match. Unset (recommended): the loaded recognizer's own "
        "measured threshold for identity.false_accept_rate, so upgrades and precisions keep the rate; a number pins "
        "it (its false-accept rate then changes with the model: each model card lists them).",
    )
    false_accept_rate: float = Field(
        D.IDENTITY_FALSE_ACCEPT_RATE,
        description="With identity.threshold unset: the share of comparisons between different people that may pass "
        "(0.01 or 0.001, as measured on LFW View 2). Lower: fewer wrong names, more unknown.",
    )

    @field_validator("false_accept_rate")
    @classmethod
    def _measured_rate(cls, v: float) -> float:
        if v not in D.IDENTITY_FALSE_ACCEPT_RATES:
            raise ValueError("must be 0.01 or 0.001 (the rates each recognizer's thresholds are measured at)")
        return v
    margin: float = Field(
        D.IDENTITY_MARGIN, ge=0, lt=1,
        description="Hysteresis: a different identity must beat the current one by this much.",
    )
    min_observations: int = Field(
        D.IDENTITY_MIN_OBSERVATIONS, ge=1, le=1000, description="Analyses needed before a name is announced."
    )


class EventsConfig(Strict):
    db: Path = Field(Path("events.db"), description="SQLite event queue (WAL).")
    jsonl: Path | None = Field(None, description="JSONL events log written from the queue.")
    jsonl_max_bytes: int = Field(64 << 20, ge=4096, description="Rotate the JSONL log at this size.")
    jsonl_backups: int = Field(5, ge=0, le=1000, description="Rotated JSONL files kept.")
    retention_days: float = Field(30.0, gt=0, description="Delete queued events older than this.")
    retention_max_events: int = Field(1_000_000, ge=1000, description="Keep at most this many events.")
    snapshots: bool = Field(
        False, description="Keep the best-quality face crop of each track as a JPEG (docs/privacy.md says what "
        "that means); events then carry its key in `snapshot`.",
    )
    snapshot_dir: Path | None = Field(
        None, description="Folder of the snapshots (owner-only); default: `snapshots` beside events.db."
    )
    snapshot_context: bool = Field(
        False, description="Also keep a downscaled frame with the face's box drawn (the scene around the face)."
    )
    snapshot_context_width: int = Field(640, ge=64, le=4096, description="Width of the context frame in pixels.")
    snapshot_max_mb: float = Field(
        1024.0, gt=0, description="Total size of the snapshots; beyond it the oldest are deleted (their events stay)."
    )
    snapshot_retention_days: float | None = Field(
        None, gt=0, description="Delete snapshots older than this (none: with their events, events.retention_days)."
    )
    store_images: Literal[False] = Field(
        False, description="Reserved: storing frames or every face is not implemented; true is refused (one face "
        "snapshot per track: events.snapshots)."
    )

    @field_validator("store_images", mode="before")
    @classmethod
    def _no_images(cls, v: Any) -> Any:
        if v is True:
            raise ValueError("storing images is not implemented; one face snapshot per track is events.snapshots "
                             "(docs/privacy.md)")
        return v


class MqttForwarder(Strict):
    type: Literal["mqtt"] = "mqtt"
    host: str = Field("127.0.0.1", description="Broker host.")
    port: int = Field(1883, ge=1, le=65535)
    topic: str = Field(
        "edge-mtl/events", min_length=1, description="Topic; [site/]box/ (fleet.box) and the camera are appended."
    )
    qos: Literal[0, 1, 2] = 1
    client_id: str = Field("edge-mtl", min_length=1)
    username: str | None = None
    password_file: Path | None = Field(None, description="File holding the password (never inline).")
    tls: bool = False
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version spoken to the broker.")
    cursor: Path | None = Field(None, description="Where delivered progress (last seq) is kept.")
    replay: bool = Field(
        True, description="Resend events already delivered when the fleet's collector asks for ones it never got "
        "(a box with fleet.box; docs/fleet.md, 'Automatic backfill')."
    )
    control_topic: str = Field(
        "edge-mtl/control", min_length=1,
        description="Where the collector asks for a resend: this box listens on <control_topic>/[site/]<box>/replay "
        "and answers what it no longer holds on <control_topic>/[site/]<box>/gone.",
    )


Forwarder = Annotated[MqttForwarder, Field(discriminator="type")]


class CameraConfig(Strict):
    name: str = Field(..., min_length=1, max_length=64, description="Camera name used in events and track ids.")
    source: str = Field(..., min_length=1, description="File path, rtsp:// URL or /dev/videoN.")
    loop: bool = Field(False, description="Restart a file source at its end (demos, soak tests).")
    realtime: bool = Field(
        False, description="Pace a file source at its native frame rate (as a camera would deliver it)."
    )
    reconnect_initial_s: float = Field(0.5, gt=0, le=60, description="First reconnect delay.")
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="Reconnect delays double up to this.")
    watchdog_s: float = Field(10.0, gt=0, le=3600, description="Reconnect when no frame arrives for this long.")
    detect_fps: float | None = Field(
        None, gt=0, le=1000,
        description="Run the face detector on at most this many of the camera's frames per second; the frames in "
        "between are still processed, the tracker carrying each face's box forward (none: detect on every "
        "processed frame). A camera detected below this rate is logged and counted (docs/performance.md).",
    )
    detect_source: str | None = Field(
        None, min_length=1,
        description="A second, low-resolution stream of the same view (a camera's substream) for the detector; "
        "faces are still cropped from `source` at full resolution.",
    )
    decode_threads: int | None = Field(
        None, ge=0, le=64,
        description="FFmpeg decoder threads for this stream (none: one when the daemon runs several cameras, "
        "FFmpeg's own default for a single camera; 0: FFmpeg's default, one per core).",
    )
    convert_dropped: bool = Field(
        False,
        description="Live streams: convert every decoded frame to BGR and let the newest replace a waiting one "
        "(fresher by up to a frame interval), instead of converting only frames that will be processed.",
    )
    scale_in_capture: bool = Field(
        True, description="Scale each delivered frame for the detector in the camera's capture thread (native "
        "code beside the main loop) rather than in the main loop.",
    )

    @field_validator("name")
    @classmethod
    def _name_chars(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError("camera name may contain only letters, digits, '_', '.', '-'")
        return v


_TOPIC_LEVEL = r"[A-Za-z0-9_.-]{1,64}"


class BrokerConfig(Strict):
    """An MQTT broker to connect to (the fleet's gallery channel, the collector's subscription)."""

    host: str = Field("127.0.0.1", min_length=1, description="Broker host.")
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = Field(None, min_length=1, max_length=128, description="MQTT client id (default: derived).")
    username: str | None = None
    password_file: Path | None = Field(None, description="File holding the password (never inline).")
    tls: bool = False
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="Reconnect delays double up to this.")


class FleetGalleryConfig(BrokerConfig):
    """Where a box takes its gallery from: `edge-mtl gallery publish` (docs/fleet.md)."""

    topic: str = Field("edge-mtl/gallery", min_length=1, description="Retained topic the signed gallery is on.")
    key_file: Path = Field(..., description="The fleet's shared HMAC-SHA256 key (a file, at least 32 bytes).")

    @field_validator("topic")
    @classmethod
    def _plain_topic(cls, v: str) -> str:
        if any(c in v for c in "+#\0"):
            raise ValueError("must not contain '+', '#' or NUL")
        return v


class FleetConfig(Strict):
    """This box in a fleet: its name in events and MQTT topics, and the fleet's gallery (docs/fleet.md)."""

    box: str | None = Field(
        None, description="This box's id: added to every event ('box') and to the MQTT topic, so camera names may "
        "repeat across boxes. Letters, digits, '_', '.', '-'."
    )
    site: str | None = Field(None, description="The site the box is at (optional; needs box).")
    gallery: FleetGalleryConfig | None = Field(
        None, description="Take the gallery from the fleet's broker (signed); it replaces identity.gallery's file."
    )

    @field_validator("box", "site")
    @classmethod
    def _level(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(_TOPIC_LEVEL, v):
            raise ValueError("1 to 64 letters, digits, '_', '.', '-'")
        return v

    @model_validator(mode="after")
    def _site_needs_box(self) -> FleetConfig:
        if self.site is not None and self.box is None:
            raise ValueError("site needs box")
        return self

class ImagesConfig(Strict):
    max_pixels: int = Field(
        D.MAX_IMAGE_PIXELS, ge=1, le=1 << 30,
        description="Still images (analyze, detect, enroll) larger than this many pixels are refused, from the file "
        "header where it tells the size (PNG, JPEG, BMP, GIF, WebP, TIFF, PNM), before decoding.",
    )


class ServiceConfig(Strict):
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve /metrics and /health on 127.0.0.1:PORT (none: no listener)."
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Listen address of /metrics, /health and the API (a non-loopback address needs the "
        "API token, api.token_file, and then every request must carry it).",
    )
    stop_timeout_s: float = Field(10.0, gt=0, le=600, description="Drain and flush within this on SIGTERM.")
    malloc_arenas: int = Field(
        2, ge=0, le=64,
        description="Cap glibc's malloc arenas as MALLOC_ARENA_MAX does (0: glibc's default, 8 per core); the "
        "environment variable wins when set. Capture threads allocating frames in many arenas fragment them.",
    )
    watchdog_stall_s: float = Field(
        30.0, gt=0, description="Stop petting the systemd watchdog when no frame was processed for this long."
    )
    detections_per_step: int = Field(
        1, ge=1, le=64,
        description="At most this many frames of cameras with a detection schedule (cameras.N.detect_fps) go "
        "through the detector in one step of the main loop, the most overdue first; the others are carried by the "
        "tracker and stay due. Keeps every camera's frames flowing at their frame rate when the detector cannot "
        "keep up (cameras without detect_fps are detected on every frame regardless).",
    )
    opencv_threads: int = Field(
        0, ge=0, le=256,
        description="Threads of OpenCV's own parallel loops (resizing, warping; cv2.setNumThreads); 0: OpenCV's "
        "default, one per core.",
    )


class ApiConfig(Strict):
    """The local HTTP API and live page on the metrics server (edge_mtl.web, docs/dashboards.md)."""

    enabled: bool = Field(
        False, description="Serve /api/... and the live page at / beside /metrics and /health (service.metrics_port)."
    )
    token_file: Path | None = Field(
        None, description="File holding the bearer token; default: the systemd credential `api-token` "
        "($CREDENTIALS_DIRECTORY/api-token). Needed for the API and for any non-loopback service.metrics_host.",
    )


class AppConfig(Strict):
    """The daemon's configuration (edge-mtl.toml)."""

    cameras: list[CameraConfig] = Field(default_factory=list)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    recognizer: RecognizerConfig = Field(default_factory=RecognizerConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    recognition: RecognitionConfig = Field(default_factory=RecognitionConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    attributes: AttributesConfig = Field(default_factory=AttributesConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    forwarders: list[Forwarder] = Field(default_factory=list)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _unique_cameras(self) -> AppConfig:
        names = [c.name for c in self.cameras]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"camera names must be unique, repeated: {sorted(dup)}")
        if self.fleet.gallery is not None and self.identity.gallery is None:
            raise ValueError("fleet.gallery needs identity.gallery: the file the fleet's gallery is kept in")
        if self.api.enabled and self.service.metrics_port is None:
            raise ValueError("api.enabled needs service.metrics_port: the API is served on the metrics server")
        return self

    @model_validator(mode="after")
    def _thresholds(self) -> AppConfig:
        problem = threshold_conflict(self)
        if problem:
            raise ValueError(problem)
        return self

    def track_high_threshold(self) -> float:
        """The tracker's high threshold in run: tracker.high_threshold, else the detector's score threshold."""
        t = self.tracker.high_threshold
        return t if t is not None else self.detector.resolved_score_threshold()


def threshold_conflict(cfg: AppConfig) -> str | None:
    """Why the tracker's thresholds, with the high one resolved from the detector's, are out of order (or None).
    Also for configs changed after validation (command-line overrides)."""
    if cfg.tracker.high_threshold is not None or cfg.tracker.low_threshold <= cfg.track_high_threshold():
        return None
    return (f"tracker.low_threshold {cfg.tracker.low_threshold} exceeds the detector's score threshold "
            f"{cfg.track_high_threshold()}, which is the tracker's high threshold while tracker.high_threshold is "
            "unset: lower tracker.low_threshold or set tracker.high_threshold")


M = TypeVar("M", bound=BaseModel)


def _key_line(text: str, loc: tuple[int | str, ...]) -> int | None:
    """Best-effort line number (1-based) of the key at `loc` in TOML `text`.

    Tracks [table] and [[array]] headers (counting array entries) and matches `key =` lines; falls back to the
    line of the nearest enclosing table.
    """
    table: list[str | int] = []
    counts: dict[tuple[str, ...], int] = {}
    header_line: dict[tuple[str | int, ...], int] = {}
    key_lines: dict[tuple[str | int, ...], int] = {}
    # TOML ends lines at "\n" only (str.splitlines() would also split at \x85, \u2028, ... inside comments)
    for n, raw in enumerate(text.split("\n"), start=1):
        line = raw.split("#", 1)[0].strip()
        m = re.fullmatch(r"\[\[\s*([^\]]+?)\s*\]\]", line)
        if m:
            parts = tuple(p.strip().strip('"') for p in m.group(1).split("."))
            idx = counts.get(parts, 0)
            counts[parts] = idx + 1
            table = [*parts, idx]
            header_line[tuple(table)] = n
            header_line.setdefault(parts, n)
            continue
        m = re.fullmatch(r"\[\s*([^\]]+?)\s*\]", line)
        if m:
            parts = tuple(p.strip().strip('"') for p in m.group(1).split("."))
            # a sub-table of an array entry: [cameras.x] after [[cameras]]
            base: list[str | int] = []
            if table and isinstance(table[-1], int) and tuple(table[:-1]) == parts[: len(table) - 1]:
                base = [*table, *parts[len(table) - 1 :]]
            table = base or list(parts)
            header_line[tuple(table)] = n
            continue
        m = re.match(r"([A-Za-z0-9_\-\"\.]+)\s*=", line)
        if m:
            key = tuple(p.strip('"') for p in m.group(1).split("."))
            key_lines[(*table, *key)] = n
    path = tuple(loc)
    while path:
        if path in key_lines:
            return key_lines[path]
        if path in header_line:
            return header_line[path]
        path = path[:-1]
    return None


def _data_loc(data: Any, loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """`loc` without the tags pydantic inserts for discriminated unions (forwarders.0.mqtt.port -> forwarders.0.port):
    keep only the parts that exist in the parsed data."""
    out: list[int | str] = []
    node = data
    for i, part in enumerate(loc):
        step = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if step:
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part in node.values() and i + 1 < len(loc):
            continue  # a union tag, e.g. the value of `type`
        else:
            return (*out, *loc[i:])
        out.append(part)
    return tuple(out)


def _one_line(s: str) -> str:
    """Keys come from the user's file and may hold line breaks or control characters: escape them."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def parse_toml(text: str, source: str, model: type[M]) -> M:
    """Validate TOML `text` against `model`; errors name the key, its line and the reason."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {_one_line(str(e))}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid TOML: nested too deeply") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        # A misspelt key also makes the key it stood for "missing": report the unknown key, which names the typo.
        err = next((x for x in errors if x.get("type") == "extra_forbidden"), errors[0])
        loc = _data_loc(data, tuple(err.get("loc", ())))
        key = _one_line(".".join(str(p) for p in loc)) or "(top level)"
        line = _key_line(text, loc)
        where = f"{source}:{line}" if line else source
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        if err.get("type") == "extra_forbidden" and loc:
            parent = _one_line(".".join(str(p) for p in loc[:-1]))
            near = difflib.get_close_matches(str(loc[-1]), sorted(_fields_at(model, loc[:-1])), n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            name = _one_line(str(loc[-1]))
            raise ConfigError(f"{where}: unknown key {name!r}{' in ' + parent if parent else ''}{hint}{more}") from None
        msg = _one_line(err.get("msg", "invalid value"))
        raise ConfigError(f"{where}: {key}: {msg}{more}") from None


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> set[str]:
    """The keys the model nested at `loc` accepts (all alternatives' keys where `loc` passes a union)."""
    models: list[type[BaseModel]] = [model]
    for part in loc:
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for m in models:
            f = m.model_fields.get(str(part))
            if f is not None:
                nxt += _models_in(f.annotation)
        models = nxt
    return {name for m in models for name in m.model_fields}


def _models_in(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for a in get_args(tp) for m in _models_in(a)]


#: Settings the command line overrides (field name -> flag), to name the flag in a one-line error.
OVERRIDE_FLAGS = {"input_size": "--input-size", "score_threshold": "--threshold", "threads": "--threads",
                  "precision": "--precision", "device": "--device", "type": "--backend", "model": "--detector or "
                  "--recognizer", "flip": "--flip"}


def override_error(e: ValidationError) -> ConfigError:
    """A command-line value the config model refuses, as one line naming the flag (not pydantic's report)."""
    err = e.errors()[0]
    loc = err.get("loc") or ("value",)
    field = str(loc[-1])
    flag = OVERRIDE_FLAGS.get(field, field)
    value = err.get("input")
    shown = f" {value}" if isinstance(value, (int, float, str)) else ""
    return ConfigError(f"{flag}{shown}: {_one_line(err.get('msg', 'invalid value'))}")


def load_toml(path: str | Path, model: type[M]) -> M:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read: {e}") from None
    return parse_toml(text, str(p), model)


def load_config(path: str | Path) -> AppConfig:
    return load_toml(path, AppConfig)
