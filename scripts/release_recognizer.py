"""Release a recognizer: from a training run's candidate checkpoints to a measured, stamped release folder.

The recipe every recognizer release since 1.4 followed (export/recognizer.md), as one command instead of a page of
steps. Each step is an `edge-mtl` command or a benchmark anyone can rerun; every command is logged and every
output lands in `--out`:

1. candidates: each named checkpoint of the run (`epoch_N`, or `avgA_B`: epochs A..B averaged with
   `edge-mtl average-checkpoints`), its quality score calibrated onto the reference release's scale
   (`edge-mtl calibrate-quality`) and exported (`edge-mtl export`);
2. the rule, fixed before the run: `benchmarks/recognizer_view1.py` on the reference and the candidates (View 1
   only, at the reference's stamped FAR 1e-2 threshold); a candidate needs the reference's View 1 10-fold accuracy
   plus `--min-gain`; the best passing one wins, ties broken by TAR at FAR 1e-3 over every View 1 pair. The rules
   `attributes`, `adults` and `wild` hold identity instead, `identity` asks a gain of that TAR, `tight` a gain of
   View 1 with one face of each pair cut at its box (`--tight`, measured for every rule); all five also read
   `edge-mtl eval attributes` (UTKFace validation) and, for `wild`, `identity` and `tight`, `benchmarks/wider_gender.py`
   (hand-labelled WIDER FACE faces): `pick_winner_*` below. Without a winner it stops there: the reference stays
   (exit 0, `decision` in summary.json);
3. View 2 and UTKFace attributes of the winner (`edge-mtl eval verification / attributes`), the first time View 2
   is touched;
4. compatibility: the margin, at the winner's own FAR 1e-2 threshold, that keeps a gallery enrolled by each
   earlier release at the winner's false-accept rate (`recognizer_view1.py --at-threshold`, every View 1 pair);
   earlier releases are the distinct versions of export/recognizer.onnx in git history, newest first;
5. the release: `edge-mtl export --version --compatible-with ...`, its score cohort (`edge-mtl score-cohort`, the
   INT8 file with the same), `edge-mtl quantize --precision int8 --method auto --save-calib`, operating points
   stamped into FP32, FP32 with flip and INT8 (`eval verification --stamp`, on the normalised scores),
   attributes for INT8, flip and the held-out 1,000 (with `--utkface-full`), `benchmarks/flip_consistency.py`.

Result: `OUT/release/` (recognizer.onnx, recognizer.int8.onnx, recognizer-int8.calib.json) and `OUT/summary.json`
with every figure. Copying into export/ and calib/, and the model card, stay a person's step.

Usage: python scripts/release_recognizer.py --run runs/recognizer11 --candidates epoch_5 avg3_5 \
           --version recognizer-1.6 --crops $EDGE_MTL_CACHE/crops --out /tmp/release16 \
           [--reference export/recognizer.onnx] [--rule view1|attributes|adults|wild|identity|tight]
           [--wider DIR [--wider-labels FILE]...] [--min-gain 0.003] [--compat 3]
           [--utkface-full DIR]
Needs ../shared/data ($EDGE_MTL_DATA) and the crop cache the run trained from. Roughly 40 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("release_recognizer")
CANDIDATE = re.compile(r"^(?:epoch_(\d+)|avg(\d+)_(\d+))$")


def candidate_epochs(name: str) -> list[int]:
    """The epochs a candidate name stands for: `epoch_5` -> [5], `avg3_5` -> [3, 4, 5]."""
    m = CANDIDATE.match(name)
    if m is None:
        raise ValueError(f"candidate {name!r}: expected epoch_N or avgA_B")
    if m.group(1):
        return [int(m.group(1))]
    a, b = int(m.group(2)), int(m.group(3))
    if not 0 < a < b:
        raise ValueError(f"candidate {name!r}: needs 0 < A < B")
    return list(range(a, b + 1))


def pick_winner(rows: Sequence[dict[str, Any]], reference: str, min_gain: float) -> dict[str, Any] | None:
    """The candidate row (recognizer_view1.py output) the rule chooses, or None: the best View 1 10-fold accuracy
    among those at least `min_gain` above the reference's, ties broken by TAR at FAR 1e-3 over every pair."""
    ref = [r for r in rows if r["model"] == reference]
    if len(ref) != 1:
        raise ValueError(f"the reference {reference} must appear once among the rows")
    bar = ref[0]["view1_10fold_accuracy"] + min_gain - 1e-9
    passing = [r for r in rows if r["model"] != reference and r["view1_10fold_accuracy"] >= bar]
    if not passing:
        return None
    return max(passing, key=lambda r: (r["view1_10fold_accuracy"], r["every_pair_tar_at_far"]["0.001"]))


def _adult_race_rows(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """The `by_race` rows of faces aged 13+ (one per race code)."""
    return [v for k, v in attrs["by_race"].items() if k.endswith(" 13+")]


def _lowest_adult_race(attrs: dict[str, Any]) -> float:
    return min(float(v["gender_accuracy_all"]) for v in _adult_race_rows(attrs))


def _adults(attrs: dict[str, Any]) -> float:
    """gender_accuracy_all over every face aged 13+ (the `by_race` rows aged 13+, weighted by their faces)."""
    rows = _adult_race_rows(attrs)
    return sum(float(v["gender_accuracy_all"]) * int(v["n"]) for v in rows) / max(sum(int(v["n"]) for v in rows), 1)


def children_gender_all(attrs: dict[str, Any]) -> float:
    """gender_accuracy_all over UTKFace validation's children (boys and girls aged 0-12, weighted by their faces)."""
    rows = [attrs["by_gender_and_age"][k] for k in ("male 0-12", "female 0-12")]
    return sum(float(v["gender_accuracy_all"]) * int(v["n"]) for v in rows) / max(sum(int(v["n"]) for v in rows), 1)


def attribute_figures(attrs: dict[str, Any], wild: dict[str, Any] | None = None) -> dict[str, float]:
    """The figures the attributes rules read from `edge-mtl eval attributes --json` (UTKFace validation), and from
    a `benchmarks/wider_gender.py` row when `wild` is given."""
    return {"lowest_race_13+_gender_all": _lowest_adult_race(attrs),
            "female_60+_gender_all": float(attrs["by_gender_and_age"]["female 60+"]["gender_accuracy_all"]),
            "adults_13+_gender_all": round(_adults(attrs), 4),
            "children_0-12_gender_all": round(children_gender_all(attrs), 4),
            "age_mae": float(attrs["age_mae"]),
            **(wild_figures(wild) if wild is not None else {})}


def wild_figures(row: dict[str, Any]) -> dict[str, float]:
    """The figures the wild rule reads from a `benchmarks/wider_gender.py` row."""
    return {"wild_gender_all": float(row["all"]["gender_accuracy_all"]),
            "wild_women_read_as_men": float(row["all"]["women_read_as_men"])}


Figures = dict[str, float]


def _pick_by_attributes(rows: Sequence[dict[str, Any]], figures: dict[str, Figures], reference: str,
                        max_view1_loss: float, gains: Callable[[Figures, Figures], bool],
                        rank: Callable[[dict[str, Any], Figures], float],
                        min_tar_gain: float = 0.0) -> dict[str, Any] | None:
    """The candidate row whose identity holds against the reference's (View 1 10-fold accuracy at most
    `max_view1_loss` lower, TAR at FAR 1e-3 over every View 1 pair at least `min_tar_gain` higher: not lower by
    default) and whose figures (`figures`: model -> `attribute_figures`) pass `gains(candidate's, reference's)`; of
    those, the highest `rank(row, figures)`. None when none passes."""
    ref = [r for r in rows if r["model"] == reference]
    if len(ref) != 1:
        raise ValueError(f"the reference {reference} must appear once among the rows")
    r0, a0 = ref[0], figures[reference]
    passing = []
    for r in rows:
        if r["model"] == reference:
            continue
        a = figures[r["model"]]
        if (r["view1_10fold_accuracy"] >= r0["view1_10fold_accuracy"] - max_view1_loss - 1e-9
                and r["every_pair_tar_at_far"]["0.001"] >= r0["every_pair_tar_at_far"]["0.001"] + min_tar_gain - 1e-9
                and gains(a, a0)):
            passing.append((rank(r, a), r))
    if not passing:
        return None
    return max(passing, key=lambda x: x[0])[1]


def _figure(name: str) -> Callable[[dict[str, Any], Figures], float]:
    """Rank by one attribute figure."""
    return lambda _row, a: a[name]


def pick_winner_adults(rows: Sequence[dict[str, Any]], attrs: dict[str, dict[str, Any]], reference: str,
                       max_view1_loss: float = 0.002, min_adult_gain: float = 0.005, max_race_loss: float = 0.012,
                       max_mae_loss: float = 0.1) -> dict[str, Any] | None:
    """The adults rule (configs/experiments/recognizer_stage13.toml), or None: the attributes rule's gains on two
    small groups (84 and 103 faces) were a face or two, below what one epoch can show, so this rule asks for a
    gain where there are faces enough to see one and no loss where there are few. A candidate passes when (a) as
    the attributes rule, identity holds, and (b) on the UTKFace validation split its `gender_accuracy_all` over all
    820 faces aged 13+ is at least `min_adult_gain` above the reference's, its lowest race aged 13+ at most
    `max_race_loss` below (one face of the smallest group), women 60+ not lower, age MAE at most `max_mae_loss`
    years higher. Of those passing: the highest adults figure."""
    def gains(a: Figures, a0: Figures) -> bool:
        return (a["adults_13+_gender_all"] >= a0["adults_13+_gender_all"] + min_adult_gain - 1e-9
                and a["lowest_race_13+_gender_all"] >= a0["lowest_race_13+_gender_all"] - max_race_loss - 1e-9
                and a["female_60+_gender_all"] >= a0["female_60+_gender_all"] - 1e-9
                and a["age_mae"] <= a0["age_mae"] + max_mae_loss + 1e-9)

    figures = {m: attribute_figures(v) for m, v in attrs.items()}
    return _pick_by_attributes(rows, figures, reference, max_view1_loss, gains, _figure("adults_13+_gender_all"))


def pick_winner_attributes(rows: Sequence[dict[str, Any]], attrs: dict[str, dict[str, Any]], reference: str,
                           max_view1_loss: float = 0.002, min_gender_gain: float = 0.01,
                           max_mae_loss: float = 0.1) -> dict[str, Any] | None:
    """The attributes rule (configs/experiments/recognizer_stage12.toml), or None. A candidate passes when (a) its
    View 1 10-fold accuracy is at most `max_view1_loss` below the reference's and its TAR at FAR 1e-3 over every
    View 1 pair not lower, and (b) on the UTKFace validation split its lowest `gender_accuracy_all` over the
    `by_race` rows aged 13+ and its `gender_accuracy_all` of women 60+ are each at least `min_gender_gain` above
    the reference's, and its age MAE at most `max_mae_loss` years above. Of those passing: the highest lowest
    race. `attrs` maps each row's model to its attributes JSON."""
    def gains(a: Figures, a0: Figures) -> bool:
        return (a["lowest_race_13+_gender_all"] >= a0["lowest_race_13+_gender_all"] + min_gender_gain - 1e-9
                and a["female_60+_gender_all"] >= a0["female_60+_gender_all"] + min_gender_gain - 1e-9
                and a["age_mae"] <= a0["age_mae"] + max_mae_loss + 1e-9)

    figures = {m: attribute_figures(v) for m, v in attrs.items()}
    return _pick_by_attributes(rows, figures, reference, max_view1_loss, gains, _figure("lowest_race_13+_gender_all"))


def utkface_held(a: Figures, a0: Figures, max_adult_loss: float, max_race_loss: float, max_old_loss: float,
                 max_child_loss: float, max_mae_loss: float) -> bool:
    """The UTKFace validation figures `a` lose at most these to the reference's `a0` (adults 13+, lowest race 13+,
    women 60+, children 0-12: gender right of all faces; age MAE in years)."""
    return (a["adults_13+_gender_all"] >= a0["adults_13+_gender_all"] - max_adult_loss - 1e-9
            and a["lowest_race_13+_gender_all"] >= a0["lowest_race_13+_gender_all"] - max_race_loss - 1e-9
            and a["female_60+_gender_all"] >= a0["female_60+_gender_all"] - max_old_loss - 1e-9
            and a["children_0-12_gender_all"] >= a0["children_0-12_gender_all"] - max_child_loss - 1e-9
            and a["age_mae"] <= a0["age_mae"] + max_mae_loss + 1e-9)


def pick_winner_wild(rows: Sequence[dict[str, Any]], attrs: dict[str, dict[str, Any]],
                     wild: dict[str, dict[str, Any]], reference: str, max_view1_loss: float = 0.002,
                     min_wild_gain: float = 0.015, max_adult_loss: float = 0.003, max_race_loss: float = 0.012,
                     max_old_loss: float = 0.01, max_child_loss: float = 0.02,
                     max_mae_loss: float = 0.1) -> dict[str, Any] | None:
    """The wild rule (configs/experiments/recognizer_stage15.toml), or None: the first rule that selects on faces
    from the wild. The adults rule could not see the gender teacher's effect, because UTKFace's validation chips
    are where the head was already right; this rule asks for the gain on `benchmarks/wider_gender.py`'s
    hand-labelled WIDER FACE faces (crowds, parades, protests: in the wild, and in no recognizer training source)
    and for no loss on UTKFace. A candidate passes when (a) as the attributes rule, identity holds; (b) on the WIDER
    faces its `gender_accuracy_all` is at least `min_wild_gain` above the reference's and it reads no more women as
    men; (c) on the UTKFace validation split its gender right of all faces aged 13+ is at most `max_adult_loss`
    below the reference's (two faces of 820), its lowest race aged 13+ at most `max_race_loss`, women 60+ at most
    `max_old_loss` (one face of 103), children 0-12 at most `max_child_loss` below, and its age MAE at most
    `max_mae_loss` years higher. Of those passing: the highest WIDER figure. `wild` maps each model to its
    `wider_gender.py` row."""
    def gains(a: Figures, a0: Figures) -> bool:
        return (a["wild_gender_all"] >= a0["wild_gender_all"] + min_wild_gain - 1e-9
                and a["wild_women_read_as_men"] <= a0["wild_women_read_as_men"]
                and utkface_held(a, a0, max_adult_loss, max_race_loss, max_old_loss, max_child_loss, max_mae_loss))

    figures = {m: attribute_figures(v, wild[m]) for m, v in attrs.items()}
    return _pick_by_attributes(rows, figures, reference, max_view1_loss, gains, _figure("wild_gender_all"))


def pick_winner_identity(rows: Sequence[dict[str, Any]], attrs: dict[str, dict[str, Any]],
                         wild: dict[str, dict[str, Any]], reference: str, min_tar_gain: float = 0.01,
                         max_view1_loss: float = 0.002, max_wild_loss: float = 0.01, max_adult_loss: float = 0.003,
                         max_race_loss: float = 0.012, max_old_loss: float = 0.01, max_child_loss: float = 0.02,
                         max_mae_loss: float = 0.1) -> dict[str, Any] | None:
    """The identity rule (configs/experiments/recognizer_stage16.toml), or None: issue 29 asks to select identity
    on TAR at FAR 1e-3 over every pair of View 1's images beside View 1 accuracy. A candidate passes when (a) that
    TAR is at least `min_tar_gain` above the reference's and its View 1 10-fold accuracy at most `max_view1_loss`
    below; (b) the attributes hold: gender right of all WIDER faces (`wild`: `benchmarks/wider_gender.py` rows) at
    most `max_wild_loss` below the reference's, and on UTKFace validation the wild rule's no-loss bars (adults
    13+, lowest race, women 60+, children 0-12, age MAE). Of those passing: the highest TAR."""
    def held(a: Figures, a0: Figures) -> bool:
        return wild_and_utkface_held(a, a0, max_wild_loss, max_adult_loss, max_race_loss, max_old_loss,
                                     max_child_loss, max_mae_loss)

    figures = {m: attribute_figures(v, wild[m]) for m, v in attrs.items()}
    return _pick_by_attributes(rows, figures, reference, max_view1_loss, held,
                               lambda row, _a: float(row["every_pair_tar_at_far"]["0.001"]), min_tar_gain)


def wild_and_utkface_held(a: Figures, a0: Figures, max_wild_loss: float = 0.01, max_adult_loss: float = 0.003,
                          max_race_loss: float = 0.012, max_old_loss: float = 0.01, max_child_loss: float = 0.02,
                          max_mae_loss: float = 0.1) -> bool:
    """The attributes a rule that selects on identity keeps: WIDER gender right of all faces at most
    `max_wild_loss` below the reference's, and `utkface_held`."""
    return (a["wild_gender_all"] >= a0["wild_gender_all"] - max_wild_loss - 1e-9
            and utkface_held(a, a0, max_adult_loss, max_race_loss, max_old_loss, max_child_loss, max_mae_loss))


def pick_winner_tight(rows: Sequence[dict[str, Any]], attrs: dict[str, dict[str, Any]],
                      wild: dict[str, dict[str, Any]], reference: str, min_tight_gain: float = 0.005,
                      max_view1_loss: float = 0.002, max_tar_loss: float = 0.005) -> dict[str, Any] | None:
    """The tight rule (configs/experiments/recognizer_stage25.toml), or None: for faces that fill their images
    (ID photos, tight crops), which no other rule looks at. A candidate passes when (a) its View 1 10-fold accuracy
    with the first image of each pair cut at its face box (`recognizer_view1.py --tight`,
    `tight_mixed_10fold_accuracy`: enrolled from an ID photo, matched on a photo with context) is at least
    `min_tight_gain` above the reference's; (b) identity with context holds: View 1 10-fold accuracy at most
    `max_view1_loss` below, TAR at FAR 1e-3 over every View 1 pair at most `max_tar_loss` below; (c) the attributes
    hold as the identity rule holds them (`wild_and_utkface_held`). Of those passing: the highest tight figure."""
    tight = {r["model"]: float(r["tight_mixed_10fold_accuracy"]) for r in rows}
    figures = {m: {**attribute_figures(v, wild[m]), "tight_mixed": tight[m]} for m, v in attrs.items()}

    def gains(a: Figures, a0: Figures) -> bool:
        return a["tight_mixed"] >= a0["tight_mixed"] + min_tight_gain - 1e-9 and wild_and_utkface_held(a, a0)

    return _pick_by_attributes(rows, figures, reference, max_view1_loss, gains, _figure("tight_mixed"),
                               -max_tar_loss)


def compatible_flags(margins: Sequence[tuple[str, float]]) -> list[str]:
    """`edge-mtl export` arguments declaring each (version, margin), in order of preference."""
    return [f"--compatible-with={v}:{m:g}" for v, m in margins]


def earlier_releases(repo: Path, rel_path: str, limit: int, tmp: Path) -> list[tuple[str, Path]]:
    """Up to `limit` distinct versions of `rel_path` in git history, newest first, each written under `tmp`."""
    from edge_mtl.export_tools.onnx_utils import read_metadata

    out: list[tuple[str, Path]] = []
    seen: set[str] = set()
    commits = subprocess.run(["git", "-C", str(repo), "log", "--format=%H", "--", rel_path],
                             check=True, capture_output=True, text=True).stdout.split()
    tmp.mkdir(parents=True, exist_ok=True)
    for c in commits:
        blob = subprocess.run(["git", "-C", str(repo), "show", f"{c}:{rel_path}"], capture_output=True)
        if blob.returncode != 0:
            continue  # the commit deleted the file
        f = tmp / f"{c[:10]}.onnx"
        f.write_bytes(blob.stdout)
        version = read_metadata(f).version
        if version in seen:
            f.unlink()
            continue
        seen.add(version)
        out.append((version, f))
        if len(out) == limit:
            break
    return out


class Runner:
    """Runs commands from the repository root, logging each; stdout to a file when given."""

    def __init__(self) -> None:
        self.edge_mtl = shutil.which("edge-mtl") or str(Path(sys.executable).parent / "edge-mtl")
        self.commands: list[str] = []

    def __call__(self, args: Sequence[object], stdout: Path | None = None) -> None:
        cmd = [str(a) for a in args]
        cmd = [self.edge_mtl, *cmd[1:]] if cmd[0] == "edge-mtl" else cmd
        shown = " ".join(cmd) + (f" > {stdout}" if stdout else "")
        log.info("$ %s", shown)
        self.commands.append(shown)
        if stdout is None:
            subprocess.run(cmd, check=True, cwd=ROOT)
            return
        with open(stdout, "w", encoding="utf-8") as f:
            subprocess.run(cmd, check=True, cwd=ROOT, stdout=f)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="the training run folder (epoch_N.pt checkpoints)")
    p.add_argument("--candidates", nargs="+", required=True, help="epoch_N or avgA_B, e.g. epoch_5 avg3_5")
    p.add_argument("--version", required=True, help="the release's version, e.g. recognizer-1.6")
    p.add_argument("--crops", type=Path, required=True, help="the crop cache the run trained from")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--reference", type=Path, default=Path("export/recognizer.onnx"), help="the release to beat")
    p.add_argument("--sources", nargs="+", help="crop sources for quality calibration (default: the run's)")
    p.add_argument("--rule", choices=("view1", "attributes", "adults", "wild", "identity", "tight"), default="view1",
                   help="view1: identity (View 1 accuracy + --min-gain); attributes: UTKFace gender of the worst "
                   "race and of women 60+ each +1 point, age MAE +0.1 at most, identity held (pick_winner_attributes); "
                   "adults: UTKFace gender of all faces 13+ +0.5 point, worst race -1.2 at most, women 60+ held, "
                   "age MAE +0.1 at most, identity held (pick_winner_adults); wild: WIDER gender +1.5 points "
                   "(pick_winner_wild); identity: every-pair View 1 TAR at FAR 1e-3 +1 point, attributes held "
                   "(pick_winner_identity); tight: View 1 with one face of each pair cut at its box +0.5 point, "
                   "identity and attributes held (pick_winner_tight)")
    p.add_argument("--min-gain", type=float, default=0.003, help="View 1 10-fold accuracy over the reference")
    p.add_argument("--compat", type=int, default=3, help="earlier releases to declare compatible (0: none)")
    p.add_argument("--utkface-full", type=Path, help="full UTKFace folder: also the held-out 1,000's attributes")
    p.add_argument("--wider", type=Path, help="the WIDER FACE subset (datasets/widerface of "
                   "himanshuchopade97/Crowd-Counting @ 6c86209a) for --rule wild")
    p.add_argument("--wider-labels", type=Path, action="append", default=[],
                   help="a WIDER gender label file for --rule wild, repeatable (default: benchmarks/wider_gender.py's)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from edge_mtl.errors import ModelError
    from edge_mtl.export_tools.onnx_utils import read_metadata
    from edge_mtl.models.checkpoint import load_checkpoint

    try:
        epochs = {c: candidate_epochs(c) for c in a.candidates}
    except ValueError as e:
        p.error(str(e))
    needed = sorted({e for es in epochs.values() for e in es})
    missing = [str(a.run / f"epoch_{e}.pt") for e in needed if not (a.run / f"epoch_{e}.pt").exists()]
    if missing or not a.reference.exists():
        p.error(f"missing: {', '.join(missing or [str(a.reference)])}")
    if a.rule in ("wild", "identity", "tight") and a.wider is None:
        p.error(f"--rule {a.rule} needs --wider (the WIDER FACE subset its hand-labelled faces come from)")
    ref_meta = read_metadata(a.reference)
    if "0.01" not in ref_meta.operating_points.get("plain", {}):
        p.error(f"{a.reference}: no stamped FAR 1e-2 threshold (edge-mtl eval verification --stamp)")
    ref_threshold = ref_meta.operating_points["plain"]["0.01"]
    sources = a.sources
    if not sources:
        try:
            sources = load_checkpoint(a.run / f"epoch_{needed[-1]}.pt")["config"]["task"]["sources"]
        except (ModelError, KeyError, TypeError) as e:
            p.error(f"cannot read the run's crop sources ({e}); name them with --sources")
    out, run = a.out.resolve(), Runner()
    cand_dir, rel_dir = out / "candidates", out / "release"
    cand_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"run": str(a.run), "reference": str(a.reference),
                               "reference_version": ref_meta.version,
                               "rule": {"name": a.rule, "threshold": ref_threshold, "min_gain": a.min_gain}}

    # 1. candidates
    onnx_of: dict[str, Path] = {}
    for name, es in epochs.items():
        ckpt = a.run / f"{name}.pt"
        if len(es) > 1:
            run(["edge-mtl", "average-checkpoints", *[a.run / f"epoch_{e}.pt" for e in es], "-o", cand_dir / ckpt.name])
            ckpt = cand_dir / ckpt.name
        calibrated = cand_dir / f"{name}_q.pt"
        run(["edge-mtl", "calibrate-quality", ckpt, "--reference", a.reference, "--crops", a.crops,
             "--sources", *sources, "-o", calibrated])
        onnx_of[name] = cand_dir / f"{name}.onnx"
        run(["edge-mtl", "export", calibrated, "-o", onnx_of[name], "--version", f"{a.run.name}-{name}"])

    # 2. the rule
    view1 = out / "view1.jsonl"
    run([sys.executable, "benchmarks/recognizer_view1.py", "--crops", a.crops, "--at-threshold", ref_threshold,
         "--tight", a.reference, *onnx_of.values()], stdout=view1)
    rows = read_jsonl(view1)
    summary["view1"] = {r["model"]: {"view1_10fold_accuracy": r["view1_10fold_accuracy"],
                                     "tar_at_far_0.001": r["every_pair_tar_at_far"]["0.001"],
                                     "tight_mixed_10fold_accuracy": r["tight_mixed_10fold_accuracy"],
                                     "tight_both_10fold_accuracy": r["tight_both_10fold_accuracy"]} for r in rows}
    if a.rule in ("attributes", "adults", "wild", "identity", "tight"):
        attrs: dict[str, dict[str, Any]] = {}
        for name, model in (("reference", a.reference), *onnx_of.items()):
            f = out / f"attributes_{name}.json"
            run(["edge-mtl", "eval", "attributes", "--json", "--recognizer", model], stdout=f)
            attrs[str(model)] = json.loads(f.read_text())
        if a.rule in ("wild", "identity", "tight"):
            wild_f = out / "wider_gender.jsonl"
            labels = [x for f in a.wider_labels for x in ("--labels", f)]
            run([sys.executable, "benchmarks/wider_gender.py", "--crops", a.crops, "--wider", a.wider, *labels,
                 a.reference, *onnx_of.values()], stdout=wild_f)
            wild = {r["model"]: r for r in read_jsonl(wild_f)}
            summary["attributes_rule"] = {m: attribute_figures(v, wild[m]) for m, v in attrs.items()}
            pick_wild = {"wild": pick_winner_wild, "identity": pick_winner_identity, "tight": pick_winner_tight}[a.rule]
            best = pick_wild(rows, attrs, wild, str(a.reference))
        else:
            summary["attributes_rule"] = {m: attribute_figures(v) for m, v in attrs.items()}
            pick = pick_winner_attributes if a.rule == "attributes" else pick_winner_adults
            best = pick(rows, attrs, str(a.reference))
    else:
        best = pick_winner(rows, str(a.reference), a.min_gain)
    if best is None:
        bar = f"the {a.rule} rule" if a.rule != "view1" else f"the reference + {a.min_gain}"
        summary["decision"] = f"no candidate reaches {bar}: {summary['reference_version']} stays"
        return finish(out, summary, run)
    winner = next(n for n, f in onnx_of.items() if str(f) == best["model"])
    summary["winner"] = winner
    log.info("the rule chooses %s", winner)

    # 3. View 2 and attributes
    run(["edge-mtl", "eval", "verification", "--json", "--quality-bins", "4", "--recognizer", onnx_of[winner]],
        stdout=out / "view2.json")
    own_threshold = float(json.loads((out / "view2.json").read_text())["threshold_at_far_0.01"])
    run(["edge-mtl", "eval", "attributes", "--json", "--recognizer", onnx_of[winner]], stdout=out / "attributes.json")

    # 4. compatibility with earlier releases
    margins: list[tuple[str, float]] = []
    history = earlier_releases(ROOT, "export/recognizer.onnx", a.compat, out / "earlier") if a.compat else []
    for version, old in history:
        f = out / f"margin_{version}.jsonl"
        run([sys.executable, "benchmarks/recognizer_view1.py", "--crops", a.crops, "--at-threshold", own_threshold,
             old, onnx_of[winner]], stdout=f)
        margins.append((version, float(read_jsonl(f)[1]["every_pair_cross_model_margin_for_own_far"])))
    summary["compatible"] = dict(margins)

    # 5. the release
    rel_dir.mkdir(exist_ok=True)
    fp32, int8 = rel_dir / "recognizer.onnx", rel_dir / "recognizer.int8.onnx"
    run(["edge-mtl", "export", cand_dir / f"{winner}_q.pt", "-o", fp32, "--version", a.version,
         *compatible_flags(margins)])
    run(["edge-mtl", "score-cohort", fp32, "--crops", a.crops], stdout=out / "score_cohort.json")
    run(["edge-mtl", "quantize", fp32, "-o", int8, "--precision", "int8", "--method", "auto",
         "--save-calib", rel_dir / "recognizer-int8.calib.json"], stdout=out / "quantize.json")
    run(["edge-mtl", "score-cohort", int8, "--from", fp32], stdout=out / "score_cohort_int8.json")
    for name, model, extra in (("fp32", fp32, []), ("flip", fp32, ["--flip"]), ("int8", int8, [])):
        run(["edge-mtl", "eval", "verification", "--json", "--quality-bins", "4", "--stamp", *extra,
             "--recognizer", model], stdout=out / f"stamp_{name}.json")
    run(["edge-mtl", "eval", "attributes", "--json", "--recognizer", int8], stdout=out / "attributes_int8.json")
    run(["edge-mtl", "eval", "attributes", "--json", "--flip", "--recognizer", fp32],
        stdout=out / "attributes_flip.json")
    if a.utkface_full:
        run(["edge-mtl", "eval", "attributes", "--json", "--split", "reserved", "--utkface-full", a.utkface_full,
             "--recognizer", fp32], stdout=out / "attributes_reserved.json")
    run([sys.executable, "benchmarks/flip_consistency.py", "--crops", a.crops, fp32],
        stdout=out / "flip_consistency.txt")
    for name in ("fp32", "flip", "int8"):
        v = json.loads((out / f"stamp_{name}.json").read_text())
        summary[f"view2_{name}"] = {k: v[k] for k in ("accuracy", "accuracy_std", "tar_at_far_0.001",
                                                       "threshold_at_far_0.001", "tar_at_far_0.01",
                                                       "threshold_at_far_0.01")}
    for name in ("attributes", "attributes_int8", "attributes_flip", "attributes_reserved"):
        f = out / f"{name}.json"
        if f.exists():
            v = json.loads(f.read_text())
            summary[name] = {k: v.get(k) for k in ("age_mae", "gender_accuracy")}
    summary["decision"] = f"{a.version} released into {rel_dir} (from {winner})"
    return finish(out, summary, run)


def finish(out: Path, summary: dict[str, Any], run: Runner) -> int:
    summary["commands"] = run.commands
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    log.info("%s; figures in %s", summary["decision"], out / "summary.json")
    return 0


def run_main(argv: Sequence[str] | None = None) -> int:
    """`main`, with a failed step reported in one line (its own output above says why) and its exit code."""
    try:
        return main(argv)
    except subprocess.CalledProcessError as e:
        cmd = " ".join(str(c) for c in e.cmd)
        sys.stderr.write(f"release_recognizer: error: this step failed with exit code {e.returncode}: {cmd}\n")
        return e.returncode or 1


if __name__ == "__main__":
    raise SystemExit(run_main())
