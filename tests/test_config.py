"""The config loader: defaults validate, errors name the key and its exact line, and nothing but ConfigError ever
escapes it (hypothesis: round trip of valid configs, random texts and mutations)."""

from __future__ import annotations

import datetime as dt
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from edge_mtl import defaults as D
from edge_mtl.config import AppConfig, TrackerConfig, load_config, parse_toml
from edge_mtl.errors import ConfigError

SRC = "edge-mtl.toml"


def _err(text: str) -> str:
    with pytest.raises(ConfigError) as ei:
        parse_toml(text, SRC, AppConfig)
    msg = str(ei.value)
    assert "\n" not in msg and "\r" not in msg, msg
    return msg


def _line_of(text: str, needle: str) -> int:
    for n, line in enumerate(text.split("\n"), start=1):
        if needle in line:
            return n
    raise AssertionError(needle)


# ------------------------------------------------------------------ fixed cases
def test_defaults_validate() -> None:
    cfg = AppConfig()
    assert cfg.detector.input_size == 640 and cfg.cameras == [] and cfg.forwarders == []
    assert parse_toml("", SRC, AppConfig) == cfg
    assert AppConfig.model_validate(cfg.model_dump()) == cfg


def test_load_config_file(tmp_path: Path) -> None:
    p = tmp_path / "a.toml"
    p.write_text('log_level = "DEBUG"\n[[cameras]]\nname = "lobby"\nsource = "rtsp://cam/1"\n', encoding="utf-8")
    cfg = load_config(p)
    assert cfg.log_level == "DEBUG" and cfg.cameras[0].name == "lobby"
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)  # a folder
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "bin.toml")


def test_unknown_key_names_key_and_line() -> None:
    text = '# edge-mtl\nlog_level = "INFO"\n\n[detector]\ninput_size = 640\n  scor_threshold = 0.5  # typo\n'
    msg = _err(text)
    assert msg == f"{SRC}:6: detector.scor_threshold: unknown key"


def test_unknown_top_level_key_line() -> None:
    text = '[detector]\ninput_size = 640\n\n[trackr]\nlost_frames = 3\n'
    assert _err(text) == f"{SRC}:4: trackr: unknown key"


def test_out_of_range_names_key_and_line() -> None:
    text = "[detector]\nmodel = \"d.onnx\"\n\n[detector.backend]\nthreads = 4\n\n[tracker]\nlost_frames = 0\n"
    msg = _err(text)
    assert msg.startswith(f"{SRC}:8: tracker.lost_frames: ")
    assert "greater than or equal to 1" in msg
    text = "[detector.backend]\ndevice = \"gpu\"\n"
    msg = _err(text)
    assert msg.startswith(f"{SRC}:2: detector.backend.device: ")


def test_several_errors_counted() -> None:
    msg = _err("[detector]\ninput_size = 1\nnms_threshold = 2.0\n")
    assert msg.startswith(f"{SRC}:2: detector.input_size:") and msg.endswith("(and 1 more)")


def test_invalid_toml_one_line() -> None:
    msg = _err('[detector]\ninput_size = = 3\n')
    assert msg.startswith(f"{SRC}: not valid TOML:") and "line 2" in msg


def test_camera_array_entries_report_their_line() -> None:
    text = (
        "[[cameras]]\n"  # 1
        'name = "lobby"\n'
        'source = "rtsp://a"\n'
        "\n"
        "[detector]\n"  # 5
        "input_size = 640\n"
        "\n"
        "[[cameras]]\n"  # 8
        'name = "door"\n'
        'source = "rtsp://b"\n'  # 10
        "watchdog_s = -1\n"  # 11
    )
    msg = _err(text)
    assert msg.startswith(f"{SRC}:11: cameras.1.watchdog_s: ")
    # a missing required key points at the entry's header
    text2 = text.replace('source = "rtsp://b"\n', "").replace("watchdog_s = -1\n", "")
    assert _err(text2).startswith(f"{SRC}:8: cameras.1.source: ")
    # a bad camera name
    text3 = text.replace('"door"', '"front door"').replace("watchdog_s = -1\n", "")
    assert _err(text3).startswith(f"{SRC}:9: cameras.1.name: ")


def test_duplicate_camera_names_rejected() -> None:
    text = '[[cameras]]\nname = "a"\nsource = "x"\n[[cameras]]\nname = "a"\nsource = "y"\n'
    msg = _err(text)
    assert "unique" in msg and "'a'" in msg


def test_forwarder_errors_name_key_without_discriminator() -> None:
    text = '[[forwarders]]\ntype = "mqtt"\nhost = "broker"\nprot = 1883\n'
    assert _err(text) == f"{SRC}:4: forwarders.0.prot: unknown key"
    text = '[[forwarders]]\ntype = "mqtt"\nport = 0\n'
    assert _err(text).startswith(f"{SRC}:3: forwarders.0.port: ")


def test_tracker_threshold_order() -> None:
    msg = _err("[tracker]\nhigh_threshold = 0.3\nlow_threshold = 0.5\n")
    assert msg.startswith(f"{SRC}:1: tracker:") and "low_threshold" in msg
    with pytest.raises(ValueError):
        TrackerConfig(high_threshold=0.3, low_threshold=0.5)


def test_dotted_and_inline_keys() -> None:
    assert _err("detector.input_size = 5\n").startswith(f"{SRC}:1: detector.input_size: ")
    assert _err('\n\ndetector = { input_size = 5 }\n').startswith(f"{SRC}:3: detector.input_size: ")


def test_deeply_nested_toml_is_a_config_error() -> None:
    msg = _err("a = " + "[" * 5000 + "]" * 5000 + "\n")
    assert msg.startswith(f"{SRC}: not valid TOML")


def test_line_numbers_count_only_toml_newlines() -> None:
    # TOML ends lines at \n only; a comment may hold characters that str.splitlines() would also split on
    text = "# caf\u2028e \x85 \u2029\n[detector]\ninput_size = 3\n"
    assert _err(text).startswith(f"{SRC}:3: detector.input_size: ")


# ------------------------------------------------------------------ a tiny TOML emitter for the properties
def _toml_str(s: str) -> str:
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def path_spelling(p: Path) -> str:
    """How a config file spells the literal path `p`: `$` doubled, a leading `~` behind `./` (expand_path)."""
    text = str(p).replace("$", "$$")
    return "./" + text if text.startswith("~") else text


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, Path):
        return _toml_str(path_spelling(v))
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, dt.date | dt.datetime | dt.time):
        return v.isoformat()
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(type(v))


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_str(k)


def emit_toml(d: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[str]:
    """Scalars first, then [tables], then [[arrays of tables]] (None values are left out: TOML has no null)."""
    lines: list[str] = []
    tables, arrays = [], []
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            arrays.append((k, v))
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in tables:
        name = ".".join(_toml_key(p) for p in (*prefix, k))
        lines += ["", f"[{name}]", *emit_toml(v, (*prefix, k))]
    for k, items in arrays:
        name = ".".join(_toml_key(p) for p in (*prefix, k))
        for item in items:
            lines += ["", f"[[{name}]]", *emit_toml(item, (*prefix, k))]
    return lines


# ------------------------------------------------------------------ strategies derived from the models themselves
INT64 = 2**63 - 1
SPECIAL: dict[tuple[str, str], st.SearchStrategy[Any]] = {
    ("CameraConfig", "name"): st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
    ("IdentityConfig", "false_accept_rate"): st.sampled_from(D.IDENTITY_FALSE_ACCEPT_RATES),
}
# discriminators of tagged unions must be present in the input even though the model has a default
ALWAYS = {("MqttForwarder", "type")}


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    b: dict[str, Any] = {}
    for m in metadata:
        for attr in ("ge", "gt", "le", "lt", "min_length", "max_length"):
            if getattr(m, attr, None) is not None:
                b[attr] = getattr(m, attr)
    return b


def _scalar(ann: Any, b: dict[str, Any]) -> st.SearchStrategy[Any]:
    if ann is bool:
        return st.booleans()
    if ann is int:
        lo = b.get("ge", b["gt"] + 1 if "gt" in b else -INT64)
        hi = b.get("le", b["lt"] - 1 if "lt" in b else INT64)
        return st.integers(lo, hi)
    if ann is float:
        lo = b.get("ge", b.get("gt"))
        hi = b.get("le", b.get("lt"))
        return st.floats(
            min_value=lo, max_value=hi, exclude_min="gt" in b, exclude_max="lt" in b, allow_nan=False
        )
    if ann is str:
        return st.text(min_size=b.get("min_length", 0), max_size=min(b.get("max_length", 24), 24))
    if ann is Path:
        return st.text(max_size=24).map(Path)
    raise TypeError(f"no strategy for {ann!r}")


def strategy_for(ann: Any, metadata: list[Any], owner: str = "", name: str = "") -> st.SearchStrategy[Any]:
    if (owner, name) in SPECIAL:
        return SPECIAL[(owner, name)]
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return strategy_for(typing.get_args(ann)[0], metadata, owner, name)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        inner = st.one_of(*[strategy_for(a, metadata, owner, name) for a in args])
        return st.none() | inner if len(args) < len(typing.get_args(ann)) else inner
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(ann))
    if origin is list:
        (item,) = typing.get_args(ann)
        if (owner, name) == ("AppConfig", "cameras"):
            return st.lists(strategy_for(item, []), max_size=3, unique_by=lambda c: c["name"])
        return st.lists(strategy_for(item, []), max_size=2)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return model_dicts(ann)
    return _scalar(ann, _bounds(metadata))


def _fix(model: type[BaseModel], d: dict[str, Any]) -> dict[str, Any]:
    """Satisfy the model validators that relate several fields."""
    if model is TrackerConfig and "low_threshold" in d and "high_threshold" in d:
        lo, hi = sorted((d["low_threshold"], d["high_threshold"]))
        d["low_threshold"], d["high_threshold"] = lo, hi
    elif model is TrackerConfig:
        d.pop("low_threshold", None)
        d.pop("high_threshold", None)
    return d


def model_dicts(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts of valid values; optional fields may be left out (then the default applies)."""
    required, optional = {}, {}
    for name, f in model.model_fields.items():
        s = strategy_for(f.annotation, list(f.metadata), model.__name__, name)
        (required if f.is_required() or (model.__name__, name) in ALWAYS else optional)[name] = s
    return st.fixed_dictionaries(required, optional=optional).map(lambda d: _fix(model, d))


def configs() -> st.SearchStrategy[AppConfig]:
    return model_dicts(AppConfig).map(AppConfig.model_validate)


def config_text(cfg: AppConfig) -> str:
    return "\n".join(emit_toml(cfg.model_dump())) + "\n"


# ------------------------------------------------------------------ properties
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(configs())
def test_property_valid_config_round_trips(cfg: AppConfig) -> None:
    text = config_text(cfg)
    assert parse_toml(text, SRC, AppConfig) == cfg


def _check_only_config_errors(text: str) -> None:
    try:
        parse_toml(text, SRC, AppConfig)
    except ConfigError as e:
        msg = str(e)
        assert msg.startswith(SRC + ":"), msg
        assert "\n" not in msg and "\r" not in msg, msg
        m = re.match(re.escape(SRC) + r":(\d+):", msg)
        if m:
            assert 1 <= int(m.group(1)) <= text.count("\n") + 1, msg


KNOWN_KEYS = sorted(
    {n for m in (AppConfig, *[f.annotation for f in AppConfig.model_fields.values()]) if isinstance(m, type)
     and issubclass(m, BaseModel) for n in m.model_fields}
    | {"name", "source", "type", "host", "port", "backend", "threads", "device"}
)
toml_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), INT64),
    st.floats(),
    st.text(max_size=12),
    st.dates(),
    st.times(),
)
random_docs = st.recursive(
    st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(min_size=1, max_size=6), toml_scalars, max_size=4),
    lambda children: st.dictionaries(
        st.sampled_from(KNOWN_KEYS) | st.text(min_size=1, max_size=6),
        children | toml_scalars | st.lists(children, min_size=1, max_size=2) | st.lists(toml_scalars, max_size=3),
        max_size=4,
    ),
    max_leaves=12,
)


@PROPS
@given(st.text(max_size=200))
@example("[[cameras]]\n[cameras]\n")
@example("[a]\n[a]\n")
@example('"\\n" = 1\n')
@example('[detector]\n"bad\u2028key" = 1\n')
@example("cameras = [{name = 1}, 3]\n")
def test_property_random_text_only_config_errors(text: str) -> None:
    _check_only_config_errors(text)


@PROPS
@given(random_docs)
def test_property_random_documents_only_config_errors(doc: dict[str, Any]) -> None:
    text = "\n".join(emit_toml(doc)) + "\n"
    _check_only_config_errors(text)


@st.composite
def mutated_texts(draw: st.DrawFn) -> str:
    lines = config_text(draw(configs())).split("\n")
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "dup", "swap", "char", "insert", "value"]))
        i = draw(st.integers(0, len(lines) - 1))
        j = draw(st.integers(0, len(lines) - 1))
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "dup":
            lines.insert(j, lines[i])
        elif op == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "char":
            s = lines[i]
            k = draw(st.integers(0, len(s)))
            lines[i] = s[:k] + draw(st.characters(blacklist_categories=["Cs"])) + s[k + 1 :]
        elif op == "insert":
            lines.insert(i, draw(st.text(max_size=20)))
        elif op == "value" and "=" in lines[i]:
            key = lines[i].split("=", 1)[0]
            lines[i] = f"{key}= {_toml_value(draw(toml_scalars))}"
    return "\n".join(lines)


@PROPS
@given(mutated_texts())
def test_property_mutations_only_config_errors(text: str) -> None:
    _check_only_config_errors(text)


comment_text = st.text(
    st.characters(blacklist_categories=["Cs"]).filter(lambda c: c == "\t" or (ord(c) >= 0x20 and ord(c) != 0x7F)),
    max_size=12,
)


@st.composite
def config_with_unknown_key(draw: st.DrawFn) -> tuple[str, int, str]:
    """A valid config with random comment lines and one unknown key inserted; (text, its line, its dotted key)."""
    lines = config_text(draw(configs())).split("\n")
    out: list[str] = []
    for line in lines:
        if draw(st.booleans()):
            out.append("# " + draw(comment_text))
        out.append(line)
    slots = [i for i, ln in enumerate(out) if ("=" in ln and not ln.startswith("#")) or ln.startswith("[")]
    pos = (draw(st.sampled_from(slots)) + 1) if slots else 0
    out.insert(pos, "zz_unknown = 1")
    table, counts = "", {}
    for ln in out[:pos]:
        if ln.startswith("[["):
            name = ln[2:-2]
            counts[name] = counts.get(name, -1) + 1
            table = f"{name}.{counts[name]}"
        elif ln.startswith("["):
            table = ln[1:-1]
    key = f"{table}.zz_unknown" if table else "zz_unknown"
    return "\n".join(out), pos + 1, key


@PROPS
@given(config_with_unknown_key())
@example(('# \u2028 \x85\n[detector]\nzz_unknown = 1\n', 3, "detector.zz_unknown"))
def test_property_unknown_key_exact_line(case: tuple[str, int, str]) -> None:
    text, line, key = case
    assert _err(text) == f"{SRC}:{line}: {key}: unknown key"


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "configs").rglob("*.toml")), ids=lambda p: p.name
)
def test_shipped_training_configs_validate(path: Path) -> None:
    """Every training config the model cards name is valid as written (a typo would surface hours into a run)."""
    from edge_mtl.config import load_toml
    from edge_mtl.train.config import TrainConfig

    cfg = load_toml(path, TrainConfig)
    assert cfg.task.kind in {"detector", "recognizer", "landmarks"}
    if cfg.init is not None and cfg.init.suffix == ".onnx":  # a shipped model: it must be there
        from edge_mtl.export_tools.onnx_utils import read_metadata

        assert read_metadata(Path(__file__).parents[1] / cfg.init).kind == cfg.task.kind == "recognizer"
    elif cfg.init is not None:
        assert cfg.init.suffix == ".pt"


def test_deploy_init_only_for_a_hard_shared_recognizer() -> None:
    from edge_mtl.config import ConfigError, parse_toml
    from edge_mtl.train.config import TrainConfig

    base = 'init = "export/recognizer.onnx"\n[task]\nkind = "recognizer"\n'
    assert parse_toml(base, "t.toml", TrainConfig).init == Path("export/recognizer.onnx")
    with pytest.raises(ConfigError, match="deploy ONNX"):
        parse_toml(base + 'sharing = "soft"\n', "t.toml", TrainConfig)
    with pytest.raises(ConfigError, match="deploy ONNX"):
        parse_toml('init = "export/detector.onnx"\n[task]\nkind = "detector"\n', "t.toml", TrainConfig)
    # carrying optimizer moments needs a training checkpoint to carry them from
    with pytest.raises(ConfigError, match="init_optimizer"):
        parse_toml("init_optimizer = true\n" + base, "t.toml", TrainConfig)
    with pytest.raises(ConfigError, match="init_optimizer"):
        parse_toml('init_optimizer = true\n[task]\nkind = "recognizer"\n', "t.toml", TrainConfig)
    ok = 'init_optimizer = true\ninit = "runs/r/last.pt"\n[task]\nkind = "recognizer"\n'
    assert parse_toml(ok, "t.toml", TrainConfig).init_optimizer


def test_paths_expand_environment_and_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/edge-mtl")
    monkeypatch.delenv("EDGE_MTL_NOT_SET", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = parse_toml(
        '[events]\ndb = "${STATE_DIRECTORY}/events.db"\njsonl = "$STATE_DIRECTORY/events.jsonl"\n'
        '[identity]\ngallery = "${EDGE_MTL_NOT_SET:-/srv/edge}/gallery.db"\n'
        '[detector]\nmodel = "~/models/detector.onnx"\n', SRC, AppConfig)
    assert cfg.events.db == Path("/var/lib/edge-mtl/events.db")
    assert cfg.events.jsonl == Path("/var/lib/edge-mtl/events.jsonl")
    assert cfg.identity.gallery == Path("/srv/edge/gallery.db")
    assert cfg.detector.model == tmp_path / "models" / "detector.onnx"
    # strings that are not paths are never touched
    cam = parse_toml('[[cameras]]\nname = "door"\nsource = "rtsp://cam/$x"\n', SRC, AppConfig).cameras[0]
    assert cam.source == "rtsp://cam/$x"


def test_literal_dollar_and_tilde_in_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A", "expanded")
    cfg = parse_toml('[events]\ndb = "/srv/$$A/$${A}/$A.db"\n[detector]\nmodel = "./~x/$$$A.onnx"\n', SRC, AppConfig)
    assert cfg.events.db == Path("/srv/$A/${A}/expanded.db")
    assert cfg.detector.model == Path("~x/$expanded.onnx")
    for p in (Path("$A"), Path("~"), Path("~u/$$/${B:-x}"), Path("a/~/$")):
        assert parse_toml(f'[detector]\nmodel = "{path_spelling(p)}"\n', SRC, AppConfig).detector.model == p


def test_unset_environment_variable_in_a_path_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_MTL_NOT_SET", raising=False)
    msg = _err('[events]\n\ndb = "$EDGE_MTL_NOT_SET/events.db"\n')
    assert msg.startswith(f"{SRC}:") and "events" in msg
    assert "db: environment variable EDGE_MTL_NOT_SET is not set" in msg


def test_training_config_paths_expand(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_mtl.train.config import TrainConfig

    monkeypatch.setenv("EDGE_MTL_CACHE", "/data/cache")
    cfg = parse_toml('[task]\nkind = "recognizer"\n[data]\ncrops = "${EDGE_MTL_CACHE:-/work/cache}/crops"\n',
                     SRC, TrainConfig)
    assert cfg.data.crops == Path("/data/cache/crops")


def test_cli_precisions_are_the_configs() -> None:
    """cli.py keeps the config module (pydantic) out of its start-up path, so it spells the precisions itself."""
    from typing import get_args

    from edge_mtl.commands.cli import PRECISIONS
    from edge_mtl.config import Precision

    assert get_args(Precision) == PRECISIONS
