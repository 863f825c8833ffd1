"""The layering rules of docs/architecture.md, checked on the import graph of edge_mtl (every import, also the
ones inside functions), and the runtime path run with torch made unimportable."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "edge_mtl"

FOUNDATION = {"edge_mtl", "errors", "types", "defaults", "paths", "config", "vision", "threads"}
RUNTIME_PATH = {"capture", "runtime", "track", "identity", "events", "pipeline", "daemon", "fleet", "web"}
TOOLING = {"data", "models", "eval", "export_tools", "train"}
COMMANDS = {"commands", "__main__"}

# Which layers each layer may import (besides itself). The one module of `data` that the runtime path uses is
# `edge_mtl.data.images` (decoding an image file: OpenCV only).
ALLOWED: dict[str, set[str]] = {
    "foundation": {"foundation"},
    "runtime": {"foundation", "runtime", "data.images"},
    "data": {"foundation", "runtime", "data"},
    "models": {"foundation", "runtime", "models"},
    "export_tools": {"foundation", "runtime", "data", "models", "export_tools"},
    "eval": {"foundation", "runtime", "data", "models", "export_tools", "eval"},
    "train": {"foundation", "runtime", "data", "models", "export_tools", "eval", "train"},
    "commands": {"foundation", "runtime", "data", "models", "export_tools", "eval", "train", "commands"},
}


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> str:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "edge_mtl"
    if module == "edge_mtl.data.images":
        return "data.images"
    if top in FOUNDATION:
        return "foundation"
    if top in RUNTIME_PATH:
        return "runtime"
    if top in COMMANDS:
        return "commands"
    if top in TOOLING:
        return top
    raise AssertionError(f"{module}: not in any layer of docs/architecture.md; add its package there and here")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every edge_mtl import in the file, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path)
    pkg = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "edge_mtl"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "edge_mtl":
                continue
            for a in node.names:  # `from edge_mtl.data import images` imports the module edge_mtl.data.images
                sub = f"{base}.{a.name}"
                is_module = (REPO / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    REPO / Path(*sub.split(".")) / "__init__.py").exists()
                out.append((node.lineno, sub if is_module else base))
    return out


def sources() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_is_in_a_layer() -> None:
    for p in sources():
        layer(module_name(p))


def test_imports_follow_the_layers() -> None:
    bad = []
    for p in sources():
        me = module_name(p)
        mine = layer(me)
        own = "runtime" if mine == "data.images" else mine  # data.images is as light as the runtime path
        allowed = ALLOWED["foundation"] if mine == "data.images" else ALLOWED[own]
        for line, target in imports_of(p):
            theirs = layer(target)
            if theirs == own or theirs in allowed or (theirs == "data.images" and "data" in allowed):
                continue
            bad.append(f"{p.relative_to(REPO)}:{line}: {me} ({mine}) imports {target} ({theirs})")
    assert not bad, "imports against docs/architecture.md's layers:\n" + "\n".join(bad)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The graph includes imports inside functions, so a lazy import cannot slip past the rules."""
    probe = PKG / "runtime" / "engine.py"
    found = {t for _, t in imports_of(probe)}
    assert "edge_mtl.errors" in found
    # a function-level import is seen: registry imports the runtime engines inside load_engine
    assert "edge_mtl.runtime.onnxruntime" in {t for _, t in imports_of(PKG / "runtime" / "registry.py")}
    assert layer("edge_mtl.train.loop.trainer") == "train" and layer("edge_mtl.daemon.service") == "runtime"


def test_nothing_imports_a_command_module() -> None:
    bad = [f"{p.relative_to(REPO)}:{line}: {t}" for p in sources() if layer(module_name(p)) != "commands"
           for line, t in imports_of(p) if layer(t) == "commands"]
    assert not bad, bad


BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "onnx"):
            raise ImportError(f"{name} is blocked: the runtime path must run without it")
        return None
sys.meta_path.insert(0, _NoTorch())
"""


def test_runtime_path_imports_without_torch() -> None:
    mods = [module_name(p) for p in sources() if layer(module_name(p)) in ("foundation", "runtime", "data.images")]
    assert len(mods) > 40
    code = BLOCK_TORCH + "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in mods)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.data
def test_run_processes_a_clip_without_torch(tmp_path: Path) -> None:
    """`edge-mtl run` end to end (shipped models, a real clip, events written) with torch and onnx unimportable."""
    clip = REPO.parent / "shared" / "data" / "videos" / "selfie_portrait.mp4"
    if not clip.exists():
        pytest.skip("../shared/data is absent")
    db = tmp_path / "events.db"
    code = BLOCK_TORCH + (
        "from edge_mtl.commands.cli import main\n"
        f"sys.exit(main(['run', '--source', {str(clip)!r}, '--max-frames', '40', '--events', {str(db)!r}, "
        "'--threads', '1']))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    import sqlite3

    with sqlite3.connect(db) as con:
        (n,) = con.execute("SELECT COUNT(*) FROM events").fetchone()
    assert n >= 1
    assert "torch" not in r.stderr.lower() or "blocked" not in r.stderr
