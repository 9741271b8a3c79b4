"""`matloop bench gfn`: Crystal-GFN speed in fresh processes and once warm, table build vs cache load.

Fresh-process figures run the real command line in a new Python process and time it whole (imports,
table loading, the work, writing the output), as a user or a campaign round pays it; peak memory is
that process's maximum resident set size. Warm figures are measured in this process after a first
draw. ``table_build_s`` is a cold build of every space group's tables without the cache;
``table_load_s`` reads them from the cache and packs them for batched rollouts.

``python -m orchestration.bench_gfn retrain`` (:func:`run_bench_retrain`) measures what a campaign
round's generator retraining costs and how far it moves the samples (fine-tune vs fresh, with and
without offline replay of labelled crystals), on a stand-in reward.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from discovery.crystal import Crystal

# runs a command and prints "returncode wall_s peak_rss_kb" of that command alone (a new process per measurement)
_WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
    "dt = time.perf_counter() - t\n"
    "print(r.returncode, dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.stderr.write(r.stderr[-2000:] if r.returncode else '')\n"
)


def fresh_process(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in GiB) of ``matloop *args`` run in a new process."""
    cmd = [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "orchestration.cli", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rc, wall, rss_kb = out.stdout.split()
    if rc != "0":
        raise RuntimeError(f"matloop {' '.join(args)} failed ({rc}): {out.stderr.strip()[-500:]}")
    return float(wall), int(rss_kb) / 2**20


def run_bench_gfn(*, iterations: int, batch_size: int, samples: int, device: str, threads: int, pyxtal_pairs: int,
                  workers: int, fresh: bool, cold: bool, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    import torch

    from discovery.gfn import CrystalGFN, DensityReward, SearchSpace, TrainConfig
    from discovery.gfn.batched import PackedTables
    from discovery.gfn.constraints import CompositionConstraints
    from discovery.gfn.validity import validity_report

    torch.set_num_threads(threads)
    result: dict[str, Any] = {
        "device": str(device), "threads": threads,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "batch_size": batch_size,
    }
    space = SearchSpace()
    if cold:
        log("cold table build (no cache)")
        t0 = time.perf_counter()
        CompositionConstraints(space.rules).packed_arrays()
        result["table_build_s"] = round(time.perf_counter() - t0, 2)
    log("table load from the cache")
    t0 = time.perf_counter()
    cc = CompositionConstraints.cached(space.rules)
    PackedTables(cc)
    result["table_load_s"] = round(time.perf_counter() - t0, 2)
    result["table_from_cache"] = cc.from_cache
    if fresh:
        with tempfile.TemporaryDirectory() as tmp:
            log("fresh process: gfn sample --untrained -n 1000")
            wall, rss = fresh_process(["gfn", "sample", "--untrained", "-n", "1000", "--workers", "1",
                                       "--out", str(Path(tmp) / "u.csv")])
            result.update(fresh_sample_untrained_1000_s=round(wall, 2), fresh_sample_peak_rss_gib=round(rss, 2))
            log(f"fresh process: gfn train --iterations 50 --batch-size {batch_size}")
            wall, rss = fresh_process(["gfn", "train", "--iterations", "50", "--batch-size", str(batch_size),
                                       "--reward", "density", "--out", str(Path(tmp) / "gfn")])
            result.update(fresh_train_50_s=round(wall, 2), fresh_train_trajectories_per_s=round(50 * batch_size / wall, 1),
                          fresh_train_peak_rss_gib=round(rss, 2))
    log("warm: sampling and training in this process")
    gfn = CrystalGFN(space, device=device, seed=0, train=TrainConfig(batch_size=batch_size))
    t0 = time.perf_counter()
    untrained = gfn.sample(samples, seed=1)  # first draw: packs the tables for batched rollouts
    result["samples_per_s_untrained_first_draw"] = round(samples / (time.perf_counter() - t0), 1)
    t0 = time.perf_counter()
    gfn.sample(samples, seed=4)
    result["samples_per_s_untrained"] = round(samples / (time.perf_counter() - t0), 1)
    gfn.train(DensityReward(), iterations=3)  # warm-up (allocator, autograd graph)
    report = gfn.train(DensityReward(), iterations=iterations)
    result.update(trajectories_per_s_train=round(report.trajectories_per_s, 1), train_iterations=iterations,
                  network=f"{gfn.policy_cfg.layers}x{gfn.policy_cfg.hidden}")
    t0 = time.perf_counter()
    trained = gfn.sample(samples, seed=2, workers=workers)
    result.update(samples_per_s=round(samples / (time.perf_counter() - t0), 1), sampling_workers=workers)
    t0 = time.perf_counter()
    gfn.sample(samples, seed=3)
    result["samples_per_s_1_process"] = round(samples / (time.perf_counter() - t0), 1)
    log("validity checks")
    validity = validity_report(untrained + trained, pyxtal_max=pyxtal_pairs, processes=2)
    result["n_samples_checked"] = len(untrained) + len(trained)
    result.update({f"valid_{k}": v for k, v in validity.items()})
    return result


# -- retraining between campaign rounds ------------------------------------------------------------
@dataclass(frozen=True)
class RandomFeatureReward:
    """A cheap stand-in for a proxy reward: fixed random element and space-group scores (seeded), log R =
    ``scale`` · Σ_e x_e·w_e + v_sg (x_e: atom fraction), plus ``boost`` for crystals whose chemical system
    contains one of ``boosted`` element pairs (what new labels in some chemical systems do to a proxy).
    With ``scale`` 16 the log-reward of a binary has a standard deviation of about 10, like a proxy's
    formation-energy score (spread ~1.4 eV/atom) at the campaigns' acquisition temperature 0.125."""

    elements: tuple[str, ...]
    seed: int = 0
    scale: float = 16.0
    boost: float = 0.0
    boosted: frozenset[frozenset[str]] = frozenset()

    def __call__(self, crystals: Sequence[Crystal]) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        w = dict(zip(self.elements, rng.normal(size=len(self.elements)), strict=True))
        v = rng.normal(scale=0.5, size=231)
        out = np.empty(len(crystals))
        for i, c in enumerate(crystals):
            out[i] = self.scale * sum(n * w[e] for e, n in c.counts.items()) / c.n_atoms + v[c.space_group]
            out[i] += self.boost * self.in_boosted(c)
        return out

    def in_boosted(self, crystal: Crystal) -> bool:
        return any(pair <= crystal.counts.keys() for pair in self.boosted)


def _overlap(a: Sequence[Crystal], b: Sequence[Crystal]) -> dict[str, float]:
    """identical: share of positions i with the same (formula, space group) in both draws (same seed);
    histogram: Σ_k min(n_a(k), n_b(k)) / n over (formula, space group) keys (1 − total variation of the
    two empirical distributions); chemsys: the same over chemical systems (sets of elements)."""
    ka, kb = [(c.formula, c.space_group) for c in a], [(c.formula, c.space_group) for c in b]

    def hist(xa: list[Any], xb: list[Any]) -> float:
        ca, cb = Counter(xa), Counter(xb)
        return round(sum(min(n, cb[k]) for k, n in ca.items()) / len(xa), 3)

    return {"identical": round(sum(x == y for x, y in zip(ka, kb, strict=True)) / len(ka), 3),
            "histogram": hist(ka, kb),
            "chemsys": hist([frozenset(c.counts) for c in a], [frozenset(c.counts) for c in b])}


def run_bench_retrain(*, first: int = 150, per_round: int = 50, samples: int = 300, offline: int = 30,
                      boosted_pairs: int = 12, boost: float = 3.0, scale: float = 16.0, seed: int = 0,
                      log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """What a round's generator retraining costs and how far it moves the samples, on the discovery
    benchmark's search space with :class:`RandomFeatureReward` (1 torch thread).

    Round 0: a fresh model trained ``first`` iterations on the base reward. Round 1, from it: a
    ``per_round``-iteration fine-tune (campaign default) or a ``first``-iteration fresh training
    (:meth:`CrystalGFN.fresh_like`, another seed), each on the same reward, on a changed one (``boost``
    added in the chemical systems of ``boosted_pairs`` random element pairs) and on the changed one with
    ``offline`` labelled crystals replayed (round 0's best draws in boosted systems, as a campaign labels
    them). Overlap with round 0: ``samples`` crystals drawn with the same seed (see :func:`_overlap`);
    ``round0.overlap_own_other_seed`` is round 0 against its own draw with another seed (sampling noise).
    """
    import torch

    from discovery.gfn import CrystalGFN, PolicyConfig, SearchSpace, TrainConfig
    from orchestration.bench_discovery.settings import BENCH_SPACE

    torch.set_num_threads(1)
    space = SearchSpace.from_dict(BENCH_SPACE)
    pairs = sorted(frozenset(p) for p in combinations(space.elements, 2))
    pick = np.random.default_rng(seed + 100).choice(len(pairs), size=boosted_pairs, replace=False)
    base = RandomFeatureReward(space.elements, seed=seed, scale=scale)
    changed = replace(base, boost=boost, boosted=frozenset(pairs[i] for i in pick))
    result: dict[str, Any] = {"space": "bench discovery (BENCH_SPACE)", "network": "2x128", "batch_size": 32,
                              "first_round_iterations": first, "per_round_iterations": per_round,
                              "samples": samples, "boosted_pairs": [sorted(p) for p in changed.boosted], "boost": boost,
                              "scale": scale}
    t0 = time.perf_counter()
    round0 = CrystalGFN(space, seed=seed, policy=PolicyConfig(hidden=128, layers=2), train=TrainConfig(batch_size=32))
    round0.sample(32, seed=0)  # builds or loads the constraint tables (timed apart)
    result["tables_s"] = round(time.perf_counter() - t0, 2)

    def summary(gfn: CrystalGFN, draw: list[Crystal]) -> dict[str, Any]:
        return {"boosted_share": round(float(np.mean([changed.in_boosted(c) for c in draw])), 3),
                "mean_changed_log_reward": round(float(changed(draw).mean()), 3),
                "distinct": len({(c.formula, c.space_group) for c in draw})}

    log(f"round 0: {first} iterations")
    rep = round0.train(base, iterations=first)
    s0 = round0.sample(samples, seed=seed + 7)
    result["round0"] = {"train_s": round(rep.seconds, 1), **summary(round0, s0),
                        "overlap_own_other_seed": _overlap(s0, round0.sample(samples, seed=seed + 9))}  # noise floor
    pool = sorted(round0.sample(1000, seed=seed + 8), key=lambda c: -float(changed([c])[0]))
    labelled: dict[tuple[str, int], Crystal] = {}
    for c in pool:
        if changed.in_boosted(c) and len(labelled) < offline:
            labelled.setdefault((c.formula, c.space_group), c)
    result["offline_in_boosted_systems"] = len(labelled)
    with tempfile.TemporaryDirectory() as tmp:
        round0.save(tmp)
        for mode, iters in (("finetune", per_round), ("fresh", first)):
            for name, reward, off in (("same", base, ()), ("changed", changed, ()),
                                      ("changed_offline", changed, tuple(labelled.values()))):
                log(f"round 1: {mode} on the {name} reward, {iters} iterations")
                gfn = CrystalGFN.load(tmp) if mode == "finetune" else CrystalGFN.fresh_like(round0, seed=seed + 1)
                rep = gfn.train(reward, iterations=iters, offline=off, offline_batch=8)
                draw = gfn.sample(samples, seed=seed + 7)
                result[f"{mode}_{name}"] = {"train_s": round(rep.seconds, 1), "iterations": iters,
                                            "offline_used": rep.offline_used, "overlap_round0": _overlap(s0, draw),
                                            **summary(gfn, draw)}
    return result


if __name__ == "__main__":  # python -m orchestration.bench_gfn retrain [--first N] [--per-round N] ... (prints JSON)
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Crystal-GFN retraining between rounds: cost and movement (JSON).")
    parser.add_argument("mode", choices=["retrain"])
    for flag, default in (("--first", 150), ("--per-round", 50), ("--samples", 300), ("--offline", 30), ("--seed", 0)):
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--scale", type=float, default=16.0, help="log-reward scale of the element scores")
    parser.add_argument("--boost", type=float, default=3.0, help="log-reward added in the boosted chemical systems")
    args = parser.parse_args()
    print(json.dumps(run_bench_retrain(first=args.first, per_round=args.per_round, samples=args.samples,
                                       offline=args.offline, seed=args.seed, scale=args.scale, boost=args.boost,
                                       log=lambda m: print(m, file=sys.stderr, flush=True))))
