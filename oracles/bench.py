"""Throughput benchmark of the CHGNet oracle on decoded candidates (``matloop bench oracle``).

Candidates: the first ``n`` rows of the MP-20 validation crystal table (conventional cells with at most
``max_atoms`` atoms), i.e. real (space group, composition, lattice) triples that the oracle decodes
with pyxtal and relaxes with CHGNet. The same candidates and seed are run with a pool of one worker
process and with a pool of ``workers`` processes, each pool warmed up first (process start and model
load are reported separately as ``startup_s``), so both runs do identical work.

Reported per run: wall time (s), structures per minute, and the share of wall time outside the
model: ``1 − Σ model_time / (wall × workers)``, where model time is the time inside CHGNet's
calculator (graph construction, forward and backward pass) and everything else (decoding, the ASE
optimizer and cell filter, hull labels, inter-process transfer, idle workers at the end) is outside.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from discovery.crystal import Crystal, crystals_from_frame
from oracles.base import Candidate, ProgressCallback
from oracles.chgnet import CHGNetOracle

DEFAULT_TABLE = Path(__file__).resolve().parent.parent / "discovery" / "data" / "mp20" / "mp20_val.csv.gz"


def bench_candidates(n: int, *, max_atoms: int = 12, table: Path = DEFAULT_TABLE) -> list[Candidate]:
    """The first ``n`` MP-20 validation crystals with ≤ ``max_atoms`` atoms in the conventional cell."""
    if not table.exists():
        raise FileNotFoundError(f"benchmark crystals not found at {table} (the MP-20 crystal table)")
    frame = pd.read_csv(table)
    crystals: list[Crystal] = [c for c in crystals_from_frame(frame.drop(columns=["formula"], errors="ignore"))
                               if c.n_atoms <= max_atoms]
    if len(crystals) < n:
        raise ValueError(f"only {len(crystals)} crystals with ≤ {max_atoms} atoms in {table}")
    return [Candidate.from_crystal(c) for c in crystals[:n]]


def run_oracle_bench(*, n: int = 16, workers: int = 2, steps: int = 100, fmax: float = 0.1, seed: int = 0,
                     max_atoms: int = 12, mp20_dir: str | None = None,
                     progress: Callable[[str], ProgressCallback | None] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-ready dict (see the module docstring)."""
    candidates = bench_candidates(n, max_atoms=max_atoms)
    load_before = os.getloadavg()
    runs: dict[str, Any] = {}
    for label, n_workers in (("one_process", 1), (f"{workers}_workers", workers)):
        with CHGNetOracle(workers=n_workers, steps=steps, fmax=fmax, mp20_dir=mp20_dir) as oracle:
            t0 = time.perf_counter()
            oracle.warm_up()
            startup = time.perf_counter() - t0
            t0 = time.perf_counter()
            results = oracle.evaluate(candidates, seed=seed, progress=progress(label) if progress else None)
            wall = time.perf_counter() - t0
        model_time = sum(float(r.provenance.get("model_time_s", 0.0)) for r in results)
        runs[label] = {
            "workers": n_workers, "wall_s": round(wall, 2), "startup_s": round(startup, 2),
            "structures_per_min": round(60.0 * len(results) / wall, 2),
            "model_time_s": round(model_time, 2),
            "share_outside_model": round(1.0 - model_time / (wall * n_workers), 4),
            "statuses": dict(Counter(r.status for r in results)),
            "total_steps": sum(r.n_steps for r in results),
        }
    one, many = runs["one_process"], runs[f"{workers}_workers"]
    return {
        "benchmark": "chgnet relaxation of decoded MP-20 validation crystals",
        "n_candidates": n, "max_atoms": max_atoms, "steps": steps, "fmax_eV_per_A": fmax, "seed": seed,
        "runs": runs, "speedup": round(one["wall_s"] / many["wall_s"], 3),
        "cpu_count": os.cpu_count(), "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }
