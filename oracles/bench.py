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
from typing import Any, Literal

import numpy as np
import pandas as pd
from pymatgen.core import Structure

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


def _run(candidates: list[Candidate], *, label: str, seed: int, progress: Callable[[str], ProgressCallback | None] | None,
         **settings: Any) -> dict[str, Any]:
    """One timed run (the oracle warmed up first: process start and model load are ``startup_s``)."""
    with CHGNetOracle(**settings) as oracle:
        t0 = time.perf_counter()
        oracle.warm_up()  # batched engine: also imports torch-sim and builds its model in every process
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = oracle.evaluate(candidates, seed=seed, progress=progress(label) if progress else None)
        wall = time.perf_counter() - t0
    n_proc = max(int(settings.get("workers", 0)), 1)
    model_time = sum(float(r.provenance.get("model_time_s", 0.0)) for r in results)
    return {
        "engine": settings.get("engine", "ase"), "workers": settings.get("workers", 0),
        "threads": settings.get("threads", 1), "wall_s": round(wall, 2), "startup_s": round(startup, 2),
        "structures_per_min": round(60.0 * len(results) / wall, 2),
        "model_time_s": round(model_time, 2),
        "share_outside_model": round(1.0 - model_time / (wall * n_proc), 4),
        "statuses": dict(Counter(r.status for r in results)),
        "total_steps": sum(r.n_steps for r in results),
    }


def run_oracle_bench(*, n: int = 16, workers: int = 2, steps: int = 100, fmax: float = 0.1, seed: int = 0,
                     max_atoms: int = 12, mp20_dir: str | None = None, batched: bool = True,
                     progress: Callable[[str], ProgressCallback | None] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-ready dict (see the module docstring).

    Sequential (ASE) runs with 1 and ``workers`` processes; with ``batched``, the batched engine with
    ``workers`` processes (one batch each, all fed from one shared queue, see :mod:`oracles.batched.pool`) and
    in one process (one torch thread), all on the same candidates in one invocation. ``speedup_batched`` = the best batched run ÷ the best sequential run."""
    candidates = bench_candidates(n, max_atoms=max_atoms)
    load_before = os.getloadavg()
    common = {"steps": steps, "fmax": fmax, "mp20_dir": mp20_dir}
    runs: dict[str, Any] = {}
    for label, n_workers in (("one_process", 1), (f"{workers}_workers", workers)):
        runs[label] = _run(candidates, label=label, seed=seed, progress=progress, engine="ase", workers=n_workers,
                           **common)
    if batched:
        runs[f"batched_{workers}_workers"] = _run(candidates, label=f"batched_{workers}_workers", seed=seed,
                                                  progress=progress, engine="batched", workers=workers, **common)
        runs["batched_1_process"] = _run(candidates, label="batched_1_process", seed=seed, progress=progress,
                                         engine="batched", workers=0, threads=1, **common)
    one, many = runs["one_process"], runs[f"{workers}_workers"]
    report: dict[str, Any] = {
        "benchmark": "chgnet relaxation of decoded MP-20 validation crystals",
        "n_candidates": n, "max_atoms": max_atoms, "steps": steps, "fmax_eV_per_A": fmax, "seed": seed,
        "runs": runs, "speedup": round(one["wall_s"] / many["wall_s"], 3),
    }
    sequential = max(r["structures_per_min"] for r in runs.values() if r["engine"] == "ase")
    report["structures_per_min_sequential"] = sequential
    if batched:
        best = max(runs.values(), key=lambda r: r["structures_per_min"] if r["engine"] == "batched" else -1.0)
        report["structures_per_min_batched"] = best["structures_per_min"]
        report["best_batched"] = {"workers": best["workers"], "threads": best["threads"]}
        report["speedup_batched"] = round(best["structures_per_min"] / sequential, 3)
    report.update({"cpu_count": os.cpu_count(), "load_avg_before": [round(x, 2) for x in load_before],
                   "load_avg_after": [round(x, 2) for x in os.getloadavg()]})
    return report


def agreement_structures(n: int = 30, *, mp20_dir: Path | None = None) -> tuple[list[Candidate], pd.DataFrame]:
    """``n`` MP-20 validation structures from their CIFs (``sample(n, random_state=0)``, as the accuracy test)."""
    folder = mp20_dir or DEFAULT_TABLE.parent
    path = next((p for p in sorted(folder.glob("*val*.csv*")) if "cif" in p.name), None)
    if path is None:
        raise FileNotFoundError(f"no MP-20 validation CIF table (*val*cif*.csv*) in {folder}")
    frame = pd.read_csv(path).sample(n, random_state=0)
    cands = [Candidate.from_structure(Structure.from_str(r.cif, fmt="cif"), id=str(r.material_id))
             for r in frame.itertuples()]
    return cands, frame


def run_engine_agreement(*, n: int = 30, steps: int = 200, fmax: float = 0.1, workers: int = 2,
                         mp20_dir: str | None = None, model: Literal["chgnet"] = "chgnet") -> dict[str, Any]:
    """Relax the same ``n`` MP-20 validation structures with both engines; compare energies and statuses.

    Reports the median and max |ΔE| (meV/atom) of the final energy per atom over structures both engines
    relaxed, the share with the same status, and each engine's formation-energy MAE against MP."""
    cands, frame = agreement_structures(n, mp20_dir=Path(mp20_dir) if mp20_dir else None)
    out: dict[str, Any] = {"benchmark": "engine agreement on MP-20 validation structures", "model": model,
                           "n": n, "steps": steps, "fmax_eV_per_A": fmax}
    results = {}
    for engine in ("ase", "batched"):
        t0 = time.perf_counter()
        with CHGNetOracle(engine=engine, workers=workers, steps=steps, fmax=fmax, mp20_dir=mp20_dir) as oracle:
            results[engine] = oracle.evaluate(cands)
        out[f"wall_s_{engine}"] = round(time.perf_counter() - t0, 2)
    mp = frame["formation_energy_per_atom"].to_numpy(dtype=float)
    delta = [abs(ea - eb) * 1000.0 for a, b in zip(results["ase"], results["batched"], strict=True)
             if (ea := a.targets.get("energy_per_atom")) is not None and (eb := b.targets.get("energy_per_atom")) is not None]
    same = sum(a.status == b.status for a, b in zip(results["ase"], results["batched"], strict=True))
    for engine, res in results.items():
        e_form = np.array([r.targets.get("formation_energy_per_atom") or np.nan for r in res], dtype=float)
        out[f"formation_energy_mae_vs_mp_{engine}"] = round(float(np.nanmean(np.abs(e_form - mp))), 4)
        out[f"statuses_{engine}"] = dict(Counter(r.status for r in res))
    out.update({"n_compared": len(delta),
                "median_abs_delta_e_meV_per_atom": round(float(np.median(delta)), 3) if delta else None,
                "max_abs_delta_e_meV_per_atom": round(float(np.max(delta)), 3) if delta else None,
                "same_status_share": round(same / len(cands), 4),
                "steps_ase": sum(r.n_steps for r in results["ase"]),
                "steps_batched": sum(r.n_steps for r in results["batched"])})
    return out


def run_mp_accuracy(*, oracle: Literal["chgnet", "sevennet"] = "sevennet", n: int = 30, steps: int = 200,
                    fmax: float = 0.1, workers: int = 2, mp20_dir: str | None = None) -> dict[str, Any]:
    """Formation-energy MAE against MP of ``oracle`` on ``n`` MP-20 validation structures relaxed from their CIFs,
    on both energy scales: the model energy taken as MP2020 ("learned") and with pymatgen's
    ``MaterialsProject2020Compatibility`` applied ("apply"), from the same relaxations."""
    from oracles.reference import corrected_energy, formation_energy_per_atom
    from oracles.registry import get_oracle

    cands, frame = agreement_structures(n, mp20_dir=Path(mp20_dir) if mp20_dir else None)
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {"steps": steps, "fmax": fmax, "workers": workers, "mp2020_correction": "learned"}
    if mp20_dir:
        kwargs["mp20_dir"] = mp20_dir
    scorer = get_oracle(oracle, **kwargs)
    try:
        results = scorer.evaluate(cands)
    finally:
        getattr(scorer, "close", lambda: None)()
    mp = frame["formation_energy_per_atom"].to_numpy(dtype=float)
    learned, applied = [], []
    for r in results:
        s, e = r.structure(), r.targets.get("energy_per_atom")
        if not r.ok or s is None or e is None:
            learned.append(np.nan)
            applied.append(np.nan)
            continue
        learned.append(formation_energy_per_atom(s.composition, e * len(s)))
        applied.append(formation_energy_per_atom(s.composition, corrected_energy(s, e * len(s))[0]))
    mae = {k: round(float(np.nanmean(np.abs(np.array(v) - mp))), 4) for k, v in (("learned", learned),
                                                                                  ("apply", applied))}
    return {"benchmark": "formation energy vs MP on MP-20 validation structures", "oracle": oracle, "n": n,
            "steps": steps, "fmax_eV_per_A": fmax, "wall_s": round(time.perf_counter() - t0, 2),
            "statuses": dict(Counter(r.status for r in results)),
            "formation_energy_mae_vs_mp": mae,
            "model_version": results[0].provenance.get("model_version") if results else None}
