#!/usr/bin/env bash
# Batched CHGNet relaxation on CUDA vs the 16-process CPU path (issue 17, acceptance: batched ≥ 10× the
# structures/min of 16 CPU processes). Run on a lent GPU machine from the repository root:
#
#     bash deploy/gpu/bench_batched.sh [OUT_DIR]        # default OUT_DIR: ${OUT:-runs/gpu-bench}
#
# Same 64 decoded candidates (first MP-20 validation crystals with ≤ 12 atoms, seed 0), fmax 0.1 eV/Å,
# ≤ 200 steps, each oracle warmed up first (model load and worker start reported apart). Writes
# bench_batched.json (and prints it). Needs the project installed (.venv or PYTHON=...) and a CUDA torch.
set -euo pipefail
OUT_DIR=${1:-${OUT:-runs/gpu-bench}}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT_DIR"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT_DIR/gpu.txt" || true
"$PY" - "$OUT_DIR" <<'PYEOF'
import json, os, sys, time, warnings
from collections import Counter

import torch

warnings.filterwarnings("ignore")
from oracles.bench import bench_candidates
from oracles.chgnet import CHGNetOracle

out_dir = sys.argv[1]
cands = bench_candidates(64, max_atoms=12)
runs = {}
configs = {
    "cpu_ase_16_workers": dict(engine="ase", workers=16, device="cpu"),
    "cpu_batched_16_workers": dict(engine="batched", workers=16, device="cpu"),
    "cuda_batched_1_process": dict(engine="batched", workers=0, device="cuda"),
    "cuda_batched_1_process_frechet": dict(engine="batched", workers=0, device="cuda", cell_filter="frechet"),
}
if not torch.cuda.is_available():
    print("no CUDA device: only the CPU rows are measured", file=sys.stderr)
    configs = {k: v for k, v in configs.items() if v["device"] == "cpu"}
for label, kw in configs.items():
    with CHGNetOracle(steps=200, fmax=0.1, **kw) as oracle:
        t0 = time.perf_counter()
        oracle.warm_up()
        oracle.evaluate(cands[:2], seed=1)  # loads the torch-sim model / CUDA context; not timed below
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = oracle.evaluate(cands, seed=0)
        wall = time.perf_counter() - t0
    runs[label] = {**kw, "wall_s": round(wall, 2), "startup_s": round(startup, 2),
                   "structures_per_min": round(60 * len(res) / wall, 2),
                   "statuses": dict(Counter(r.status for r in res)), "total_steps": sum(r.n_steps for r in res)}
    print(label, runs[label], flush=True)
report = {"n": len(cands), "steps": 200, "fmax": 0.1, "cpu_count": os.cpu_count(),
          "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
          "runs": runs}
if "cuda_batched_1_process" in runs:
    cpu = runs["cpu_ase_16_workers"]["structures_per_min"]
    report["speedup_cuda_batched_vs_cpu_16"] = round(
        max(r["structures_per_min"] for k, r in runs.items() if k.startswith("cuda")) / cpu, 3)
with open(os.path.join(out_dir, "bench_batched.json"), "w") as fh:
    json.dump(report, fh, indent=2)
print(json.dumps(report, indent=2))
PYEOF
