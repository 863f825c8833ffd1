"""Every test file is collected, with every test it defines: pytest skipped `tests/build/` for months because of
its default `norecursedirs` (a folder named `build`), so nothing ran its 63 tests. This counts, per file, the test
functions the source defines and the tests pytest collects from it, in a separate collection of the whole tree."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"


def defined_tests(path: Path) -> int:
    """Test functions at module level and in `Test*` classes (each collected at least once)."""
    tree = ast.parse(path.read_text(), str(path))
    n = 0
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            n += 1
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            n += sum(1 for f in node.body
                     if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and f.name.startswith("test"))
    return n


def test_every_test_file_is_collected_with_all_its_tests() -> None:
    files = sorted(p for p in TESTS.rglob("test_*.py") if "__pycache__" not in p.parts)
    assert len(files) > 60
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-rs", "-p", "no:cacheprovider",
                        str(TESTS)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    collected = Counter(line.split("::", 1)[0] for line in r.stdout.splitlines() if "::" in line)
    # files skipped as a whole at import (pytest.importorskip of an optional dependency) say so in the summary
    skipped = set(re.findall(r"SKIPPED \[\d+\] (tests/\S+?\.py)", r.stdout))
    short = []
    for f in files:
        rel = f.relative_to(REPO).as_posix()
        want = defined_tests(f)
        if rel in skipped and collected[rel] == 0:
            continue
        if collected[rel] < want:
            short.append(f"{rel}: {collected[rel]} collected, {want} defined")
    assert not short, "test files pytest does not fully collect:\n" + "\n".join(short)
    total = re.search(r"(\d+) tests? collected", r.stdout)
    assert total and int(total.group(1)) == sum(collected.values())
