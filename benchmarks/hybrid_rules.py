"""How the hybrid's weight rule fares on outer dev queries: no training, the models a ``--dev-only`` study saved.

    python benchmarks/hybrid_rules.py --study /tmp/study [/tmp/study2 ...] --variant anchored2

For each outer carve ``STUDY/outer-SEED`` of ``benchmarks/quality_study.py --dev-only`` whose variant's model folder
holds ``hybrid.json``, the model and BM25 are scored on the outer dev queries (which no inner choice saw) and fused
at (a) the weight training saved (``modeling.training.hybrid.choose_weight``: the weight nearest 0.5 within one
standard error of the inner dev's best), (b) the inner dev's best weight, and (c) every fixed weight of the grid, each
at the normalisation training saved. Prints nDCG@10 over all outer dev queries and the by-document (unseen) half,
per carve and the mean. The test split is never opened.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SLICES = ("all", "unseen")


def carve_rows(study: Path, variant: str) -> dict[str, dict[str, dict[str, float]]]:
    """Per outer carve: rule name -> slice -> outer dev nDCG@10."""
    from quality_study import Scorer

    from modeling.evaluation.fusion import WEIGHT_GRID, convex
    from modeling.evaluation.systems import load_model

    rows = {}
    for folder in sorted(p for p in study.glob("outer-*") if p.is_dir() and not p.name.endswith("-runs")):
        model_dir = study / f"{folder.name}-runs" / variant / "seed-0"
        if not (model_dir / "hybrid.json").is_file():
            continue
        saved = json.loads((model_dir / "hybrid.json").read_text())
        how = saved.get("normalisation", "min-max")
        scorer = Scorer(str(folder))
        dense = scorer.dense_run(load_model(str(model_dir), trust_remote_code=True))
        fused = {w: scorer.slices_of(convex(dense, scorer.bm25, w, scorer.depth, how)) for w in WEIGHT_GRID}
        row = {"saved (one-SE rule)": fused[saved["dense_weight"]], "inner dev best": fused[saved["dev_best_weight"]]}
        row.update({f"fixed {w:g}": fused[w] for w in WEIGHT_GRID})
        rows[folder.name] = row
        print(f"{folder.name}: saved {saved['dense_weight']:g}, inner best {saved['dev_best_weight']:g} ({how}); "
              + ", ".join(f"{rule} {v['all']:.4f}" for rule, v in row.items() if not rule.startswith("fixed")),
              flush=True)  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--study", required=True, type=Path, nargs="+", help="quality_study.py --dev-only output folders"
    )
    parser.add_argument("--variant", required=True, help="the variant whose saved models to score")
    args = parser.parse_args(argv)
    rows = {name: row for study in args.study for name, row in carve_rows(study, args.variant).items()}
    if not rows:
        parser.error(f"no STUDY/outer-*-runs/{args.variant}/seed-0/hybrid.json under {args.study}: run the study first")
    print(f"\n| rule | {' | '.join(f'outer dev {s}' for s in SLICES)} | per carve (all) |\n|---|---|---|---|")
    for rule in next(iter(rows.values())):
        means = [statistics.fmean(row[rule][s] for row in rows.values()) for s in SLICES]
        carves = ", ".join(f"{row[rule]['all']:.4f}" for row in rows.values())
        print(f"| {rule} | {' | '.join(f'{m:.4f}' for m in means)} | {carves} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
