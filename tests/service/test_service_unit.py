"""The systemd files: the unit verifies and scores well in `systemd-analyze security`, agrees with the example
config, the example config is valid, sysusers/tmpfiles apply, and the sandbox's MemoryDenyWriteExecute=yes does
not break the CPU pipeline."""

from __future__ import annotations

import configparser
import ctypes.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from service_helpers import EVENTFUL, REPO, child_env, edge_mtl, queue_rows

from edge_mtl import defaults as D
from edge_mtl.config import load_config

SYSTEMD = REPO / "systemd"
UNIT = SYSTEMD / "edge-mtl.service"
EXAMPLE = SYSTEMD / "edge-mtl.toml"
MAX_EXPOSURE = 3.0


def _unit_with_absolute_paths(tmp_path: Path) -> Path:
    """The unit names `edge-mtl` and lets systemd find it in its PATH; verify needs the binary to exist, so a copy
    points at the edge-mtl console script of this environment."""
    exe = Path(sys.executable).with_name("edge-mtl")
    if not exe.exists():
        pytest.skip(f"{exe} not installed (pip install -e .)")
    text = UNIT.read_text()
    text = re.sub(r"^(ExecStart(?:Pre)?=)edge-mtl ", rf"\1{exe} ", text, flags=re.M)
    out = tmp_path / "edge-mtl.service"
    out.write_text(text)
    return out


def _analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    return exe


def test_unit_verifies(tmp_path: Path) -> None:
    unit = _unit_with_absolute_paths(tmp_path)
    proc = subprocess.run([_analyze(), "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    ours = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "edge-mtl" in ln]
    assert ours == [], ours


def test_unit_security_exposure(tmp_path: Path) -> None:
    unit = _unit_with_absolute_paths(tmp_path)
    proc = subprocess.run([_analyze(), "security", "--offline=yes", str(unit)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    if "--offline" in proc.stderr and proc.returncode != 0:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    m = re.search(r"Overall exposure level for edge-mtl\.service: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout[-2000:] + proc.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, proc.stdout


def _unit_values() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            values.setdefault(k, []).append(v)
    return values


def _seconds(v: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|min)?", v)
    assert m, v
    return float(m.group(1)) * (60 if m.group(2) == "min" else 1)


def test_unit_agrees_with_the_example_config() -> None:
    u = _unit_values()
    cfg = load_config(EXAMPLE)
    assert u["Type"] == ["notify"] and u["NotifyAccess"] == ["main"]
    assert u["ExecStartPre"] == ["edge-mtl check-config /etc/edge-mtl/edge-mtl.toml"]
    assert u["ExecStart"] == ["edge-mtl run --config /etc/edge-mtl/edge-mtl.toml"]
    assert u["ExecReload"] == ["kill -HUP $MAINPID"]
    assert "2" in u["RestartPreventExitStatus"][0].split()  # a bad config is not retried forever
    # systemd must not kill the daemon while it drains within service.stop_timeout_s
    assert _seconds(u["TimeoutStopSec"][0]) >= cfg.service.stop_timeout_s + 5
    # the daemon's stall detection fires well within systemd's patience for a missed ping
    assert cfg.service.watchdog_stall_s <= _seconds(u["WatchdogSec"][0])
    assert all(c.watchdog_s < cfg.service.watchdog_stall_s for c in cfg.cameras)
    # every path the example config writes lies in a directory the unit makes writable
    writable = ["/var/lib/edge-mtl", "/var/log/edge-mtl", "/var/cache/edge-mtl"]
    assert u["StateDirectory"] == ["edge-mtl"] and u["LogsDirectory"] == ["edge-mtl"]
    for p in (cfg.events.db, cfg.events.jsonl, cfg.identity.gallery, cfg.detector.backend.engine_cache):
        assert any(str(p).startswith(w) for w in writable), p
    assert cfg.service.metrics_port is None and cfg.forwarders == []  # no listener, nothing leaves the box
    # the identity threshold follows the installed recognizer's measured point, not a number pinned in the file
    assert cfg.identity.threshold is None and cfg.identity.false_accept_rate == 0.01
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string((SYSTEMD / "jetson.conf").read_text())
    assert parser.has_section("Service")


def test_example_config_passes_check_config(tmp_path: Path, models: dict[str, Path]) -> None:
    """As shipped it points at /opt/edge-mtl/models; with the models there (here: tiny ones) it checks out."""
    text = EXAMPLE.read_text()
    text = text.replace("/opt/edge-mtl/models/detector.onnx", str(models["detector"]))
    text = text.replace("/opt/edge-mtl/models/recognizer.onnx", str(models["recognizer"]))
    text = text.replace("/opt/edge-mtl/models/landmarks.onnx", str(SYSTEMD.parent / "export" / "landmarks.onnx"))
    cfg = tmp_path / "edge-mtl.toml"
    cfg.write_text(text)
    proc = edge_mtl("check-config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert f"{cfg}: ok" in lines
    # it also says which identity threshold the daemon would run at (the tiny model carries no measured one)
    assert lines[-1].startswith(
        f"{cfg}: identity threshold {D.IDENTITY_THRESHOLD:.3f} (built-in default for false-accept rate 0.01")


def test_sysusers_and_tmpfiles_apply(tmp_path: Path) -> None:
    sysusers, tmpfiles = shutil.which("systemd-sysusers"), shutil.which("systemd-tmpfiles")
    if sysusers is None or tmpfiles is None:
        pytest.skip("systemd-sysusers / systemd-tmpfiles not installed")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run([sysusers, f"--root={root}", str(SYSTEMD / "edge-mtl.sysusers")], check=True,
                   capture_output=True, timeout=60)
    assert re.search(r"^edge-mtl:x:\d+:\d+:", (root / "etc" / "passwd").read_text(), re.M)
    subprocess.run([tmpfiles, f"--root={root}", "--create", str(SYSTEMD / "edge-mtl.tmpfiles")], check=True,
                   capture_output=True, timeout=60)
    for d, mode in (("var/lib/edge-mtl", 0o700), ("var/log/edge-mtl", 0o700), ("var/cache/edge-mtl/engines", 0o700),
                    ("etc/edge-mtl", 0o750)):
        assert (root / d).is_dir() and (root / d).stat().st_mode & 0o777 == mode, d


def test_pipeline_runs_under_memory_deny_write_execute(
    tmp_path: Path, model_args: list[str], clips: dict[str, Path]
) -> None:
    """MemoryDenyWriteExecute=yes is only in the unit because the CPU path (ONNX Runtime, OpenCV/FFmpeg, SQLite)
    needs no writable+executable memory: run the real pipeline under the same seccomp rules systemd installs."""
    if ctypes.util.find_library("seccomp") is None:
        pytest.skip("libseccomp not installed")
    cfg = tmp_path / "run.toml"
    cfg.write_text(EVENTFUL + "\n[recognition]\nmin_face_px = 8\n")
    db = tmp_path / "events.db"
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("mdwe_child.py")), "run", "--config", str(cfg), "--source",
         str(clips["short"]), "--events", str(db), "--jsonl", str(tmp_path / "e.jsonl"), *model_args],
        capture_output=True, text=True, timeout=180, cwd=REPO, env=child_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert queue_rows(db), "no event was written"
    m = re.search(r"(\d+) analyses", proc.stderr)
    assert m and int(m.group(1)) > 0, "the recognizer never ran"


def test_malloc_arena_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """`service.malloc_arenas` caps glibc's arenas through mallopt (the soak's memory growth, docs/operations.md);
    an operator's MALLOC_ARENA_MAX wins."""
    from edge_mtl.config import AppConfig
    from edge_mtl.daemon.service import limit_malloc_arenas

    assert AppConfig().service.malloc_arenas == 2
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    if not ctypes.util.find_library("c"):
        pytest.skip("no C library to call (not glibc)")
    assert limit_malloc_arenas(2) is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas(2) is False
