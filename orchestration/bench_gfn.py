"""`matloop bench gfn`: Crystal-GFN speed in fresh processes and once warm, table build vs cache load.

Fresh-process figures run the real command line in a new Python process and time it whole (imports,
table loading, the work, writing the output), as a user or a campaign round pays it; peak memory is
that process's maximum resident set size. Warm figures are measured in this process after a first
draw. ``table_build_s`` is a cold build of every space group's tables without the cache;
``table_load_s`` reads them from the cache and packs them for batched rollouts.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
