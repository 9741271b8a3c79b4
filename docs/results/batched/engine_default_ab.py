"""Usage (repository root): nice -n 10 .venv/bin/python docs/results/batched/engine_default_ab.py > ab.json

Interleaved A/B (ase vs batched, same load) for the default-engine decision; run niced, one torch thread."""
from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    import torch
    torch.set_num_threads(1)
    from oracles.bench import bench_candidates
    from oracles.chgnet import CHGNetOracle
    out: dict = {"load_before": os.getloadavg()}
    cands = bench_candidates(16)
    for workers in (0, 1):
        oracles = {e: CHGNetOracle(engine=e, workers=workers, steps=200, fmax=0.1) for e in ("ase", "batched")}
        for o in oracles.values():
            o.warm_up()
            o.evaluate(cands[15:16])  # warm: model, torch-sim, first graph
        for n in (1, 3):
            for rep in range(3):
                order = ("ase", "batched") if rep % 2 == 0 else ("batched", "ase")
                for e in order:
                    batch = cands[rep * 3: rep * 3 + n]
                    t = time.perf_counter()
                    res = oracles[e].evaluate(batch, seed=0)
                    wall = time.perf_counter() - t
                    out.setdefault(f"tiny_w{workers}_n{n}_{e}", []).append(
                        {"wall_s": round(wall, 2), "steps": sum(r.n_steps for r in res), "load1": round(os.getloadavg()[0], 1), "statuses": [r.status for r in res], "msg": res[0].message[:120]})
                print(workers, n, rep, {e: out[f"tiny_w{workers}_n{n}_{e}"][-1] for e in order}, flush=True)
        for o in oracles.values():
            o.close()
    out["load_after"] = os.getloadavg()
    json.dump(out, sys.stdout, indent=1)

if __name__ == "__main__":
    main()
