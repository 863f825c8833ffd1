"""The collector's systemd unit verifies and scores well in `systemd-analyze security`; its example config is
valid and names the settings the unit relies on; the box example config documents the [fleet] section."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_mtl.config import load_config
from edge_mtl.fleet.config import load_collector_config
from tests.proc_helpers import REPO

UNIT = REPO / "systemd" / "edge-mtl-collect.service"
EXAMPLE = REPO / "systemd" / "collector.toml"


def _unit(tmp_path: Path) -> Path:
    exe = Path(sys.executable).with_name("edge-mtl")
    if not exe.exists():
        pytest.skip(f"{exe} not installed (pip install -e .)")
    out = tmp_path / UNIT.name
    out.write_text(re.sub(r"^(ExecStart(?:Pre)?=)edge-mtl ", rf"\1{exe} ", UNIT.read_text(), flags=re.M))
    return out


def _analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    return exe


def test_collector_unit_verifies_and_is_sandboxed(tmp_path: Path) -> None:
    unit = _unit(tmp_path)
    proc = subprocess.run([_analyze(), "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0 and "edge-mtl" not in proc.stdout + proc.stderr, proc.stderr
    proc = subprocess.run([_analyze(), "security", "--offline=yes", str(unit)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert m, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert float(m[1]) <= 2.0, f"exposure {m[1]}"


def test_collector_example_config_matches_the_unit() -> None:
    cfg = load_collector_config(EXAMPLE).collector
    text = UNIT.read_text()
    assert f"--config /etc/edge-mtl/{EXAMPLE.name}" in text
    # the credentials the unit documents are where the example reads them
    assert str(cfg.database.password_file).startswith("/run/credentials/edge-mtl-collect.service/")
    assert str(cfg.broker.password_file).startswith("/run/credentials/edge-mtl-collect.service/")
    assert cfg.broker.client_id and cfg.broker.session_expiry_s >= 86400


def test_box_example_config_documents_the_fleet_section(tmp_path: Path) -> None:
    """The [fleet] lines of systemd/edge-mtl.toml, uncommented, are a valid config."""
    text = (REPO / "systemd" / "edge-mtl.toml").read_text()
    block = text[text.index("# [fleet]"):].split("\n\n", 1)[0]  # the commented block, up to the blank line
    lines = [ln[2:] for ln in block.splitlines() if re.match(r"# (\[|[a-z_]+ = )", ln)]
    assert len(lines) >= 8, block
    cfg_text = "[identity]\ngallery = \"g.db\"\n" + "\n".join(lines) + "\n"
    (tmp_path / "box.toml").write_text(cfg_text)
    cfg = load_config(tmp_path / "box.toml")
    assert cfg.fleet.box and cfg.fleet.site and cfg.fleet.gallery is not None
