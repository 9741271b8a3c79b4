"""Physical check of a finished S.U.N. benchmark's hits, from its ``--out`` directory (no oracle call):

for each strategy, the S.U.N. results' relaxed structures (CHGNet, status ``ok``): volume per atom (Å³/atom)
against the range of the MP-20 train structures (1st–99th percentile), the share whose relaxed space group
(spglib, symprec 0.1 Å) is still the one the candidate was proposed in, dimensionality (Larsen), and how many
are new formulas (absent from the dense hull reference and the seed data).

Usage: ``python -m orchestration.bench_discovery.physical runs/bench-sun`` (prints one JSON object).
"""

from __future__ import annotations

import json
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from orchestration.bench_discovery.settings import Evaluated


def cached_runs(out: Path) -> dict[tuple[str, int], list[Evaluated]]:
    """(strategy, seed) → calls, from the baselines' cache files and the loop campaigns' stores in ``out``."""
    from orchestration.bench_discovery.runner import evaluated_from_json
    from orchestration.bench_discovery.strategies import loop_calls
    from orchestration.store import Store

    runs: dict[tuple[str, int], list[Evaluated]] = {}
    for f in sorted((out / "cache").glob("*-s*.json")):
        strategy, number = f.stem.rsplit("-s", 1)
        runs[strategy, int(number)] = [evaluated_from_json(r) for r in json.loads(f.read_text())["evaluated"]]
    for d in sorted(out.glob("loop-s*")):
        seed = int(d.name.removeprefix("loop-s"))
        name = f"bench-discovery-s{seed}"
        with Store.open(f"sqlite:///{d / 'store.db'}", create=False) as store:
            runs["loop", seed] = loop_calls(store, name, rounds=len(store.rounds(name)))
    return runs


def mp20_volume_range() -> tuple[float, float]:
    """1st and 99th percentile of the volume per atom (Å³/atom) of the MP-20 train structures."""
    from discovery.datasets import load_mp20

    crystals = load_mp20("train", "formation_energy_per_atom").data.crystals
    v = np.array([c.volume / c.n_atoms for c in crystals])
    return float(np.percentile(v, 1)), float(np.percentile(v, 99))


def check(out: Path) -> dict[str, Any]:
    from orchestration.bench_discovery.metrics import sun_labels
    from orchestration.campaign.sun import parse_cif

    lo, hi = mp20_volume_range()
    per: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for (strategy, _seed), calls in sorted(cached_runs(out).items()):
            labels = sun_labels(calls)
            acc = per.setdefault(strategy, {"sun": 0, "volumes": [], "same_space_group": 0, "dimensionality": Counter(),
                                            "novel_formula": 0})
            for e, lab in zip(calls, labels, strict=True):
                if not lab.sun:
                    continue
                s = parse_cif(e.relaxed_cif)
                assert s is not None
                acc["sun"] += 1
                acc["volumes"].append(s.volume / len(s))
                acc["same_space_group"] += int(lab.relaxed_space_group == e.crystal.space_group)
                acc["dimensionality"][str(lab.dimensionality)] += 1
                acc["novel_formula"] += int(lab.novel_formula)
    report: dict[str, Any] = {"mp20_volume_per_atom_p01_p99": [round(lo, 2), round(hi, 2)], "strategies": {}}
    for strategy, acc in per.items():
        v = np.array(acc["volumes"])
        report["strategies"][strategy] = {
            "sun": acc["sun"], "novel_formula": acc["novel_formula"],
            "volume_per_atom_median": round(float(np.median(v)), 2) if len(v) else None,
            "volume_per_atom_min_max": [round(float(v.min()), 2), round(float(v.max()), 2)] if len(v) else None,
            "in_mp20_volume_range": int(((v >= lo) & (v <= hi)).sum()),
            "relaxed_space_group_kept": acc["same_space_group"],
            "dimensionality": dict(acc["dimensionality"]),
        }
    return report


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if args and args[0] in ("-h", "--help") else 2)
    print(json.dumps(check(Path(args[0])), indent=1))


if __name__ == "__main__":
    main()
