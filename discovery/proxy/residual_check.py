"""Does the proxy learn from its oracle labels? Replay of a discovery benchmark's oracle calls.

``docs/results/discovery/evaluated.jsonl`` holds every oracle call of an earlier benchmark (strategy, seed,
call order, crystal, status, CHGNet formation energy). The base ensemble is fitted once on MP-20 train (the
benchmark's proxy settings); then, round by round, each round's batch is predicted *before* its labels are
seen by

- ``base``: the base alone;
- ``residual``: base + :class:`~discovery.proxy.residual.ResidualProxy` fitted on the earlier rounds' labels;
- ``refit`` (loop only): the base warm-started on seed rows + earlier labels, as a campaign does today.

Labels are the ``ok`` calls with a finite formation energy (what a campaign trains on). ``loop`` replays the
loop strategy of each seed (its own rounds); ``pooled`` all strategies' calls in call order, in rounds of
``--pooled-batch`` calls. ``ablation``: pooled MAE over rounds ≥ 1 for other residual configurations.

    python -m discovery.proxy.residual_check --json
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from discovery.crystal import Crystal
from discovery.datasets import LabeledSet, load_mp20
from discovery.proxy.ensemble import EnsembleConfig, EnsembleProxy
from discovery.proxy.metrics import coverage
from discovery.proxy.residual import ResidualConfig, ResidualProxy

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "docs" / "results" / "discovery" / "evaluated.jsonl"
TARGET: Final = "formation_energy_per_atom"
# The benchmark's campaign proxy (orchestration/bench_discovery.py campaign_config): 5 members, 128 hidden, 3 layers.
BASE_CONFIG = EnsembleConfig(n_members=5, hidden=128, n_layers=3, epochs=60, warm_epochs=20, seed=0)
ABLATIONS: dict[str, ResidualConfig] = {
    "default (magpie)": ResidualConfig(),
    "dense features": ResidualConfig(features="dense"),
    "fraction features": ResidualConfig(features="fractions"),
    "no strain slope": ResidualConfig(penalty_slope_prior_std=0.0),
    "no strain noise": ResidualConfig(strain_noise_prior=0.0),
    "no shared offset": ResidualConfig(bias_prior_std=0.0),
    "GP only (no offset, no slope)": ResidualConfig(bias_prior_std=0.0, penalty_slope_prior_std=0.0),
    "s, l and sigma scale unbounded": ResidualConfig(amplitude_min=0.02, max_length_scale=50.0,
                                                     calibration_bounds=(0.2, 5.0)),
}


def read_calls(path: Path) -> list[dict[str, Any]]:
    """The benchmark's oracle calls with a ``crystal`` (:class:`Crystal`) and ``round`` (loop: from the id)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in rows:
        counts = {el: int(n) for el, n in re.findall(r"([A-Z][a-z]?)(\d+)", r["composition"])}
        a, b, c, alpha, beta, gamma = (float(v) for v in r["lattice"])
        r["crystal"] = Crystal(int(r["space_group"]), counts, a, b, c, alpha, beta, gamma, id=r["id"])
        m = re.match(r"r(\d+)-", r["id"])
        r["round"] = int(m.group(1)) if m else None
        y = r.get(TARGET)
        r["label_ok"] = bool(r["status"] == "ok" and y is not None and np.isfinite(y))
    return rows


def labels(rows: list[dict[str, Any]]) -> LabeledSet:
    ok = [r for r in rows if r["label_ok"]]
    return LabeledSet([r["crystal"] for r in ok], np.array([[r[TARGET]] for r in ok], dtype=float).reshape(-1, 1),
                      (TARGET,))


def _scores(proxy: EnsembleProxy | ResidualProxy, batch: LabeledSet) -> tuple[float, float]:
    post = proxy.posterior(batch.crystals)
    mu, sd = post.column(TARGET)
    err = mu.double().numpy() - batch.targets[:, 0]
    return float(np.abs(err).mean()), coverage(err, sd.double().numpy(), level=0.9)


def replay(base: EnsembleProxy, rounds: list[LabeledSet], *, config: ResidualConfig,
           seed_rows: LabeledSet | None = None) -> list[dict[str, Any]]:
    """Per round r: MAE and 90 % coverage on round r's labels of the base, of base + residual on rounds < r,
    and (with ``seed_rows``) of the base warm-started on seed rows + rounds < r."""
    out = []
    for r, batch in enumerate(rounds):
        if not len(batch):
            continue
        seen = [b for b in rounds[:r] if len(b)]
        past = seen[0] if seen else LabeledSet([], np.zeros((0, 1)), (TARGET,))
        for b in seen[1:]:
            past = past.concat(b)
        mae_b, cov_b = _scores(base, batch)
        res = ResidualProxy.fit(base, past, target=TARGET, config=config)
        mae_r, cov_r = _scores(res, batch)
        row: dict[str, Any] = {"round": r, "n_batch": len(batch), "n_labels_before": len(past),
                               "mae_base": round(mae_b, 4), "mae_residual": round(mae_r, 4),
                               "coverage90_base": round(cov_b, 3), "coverage90_residual": round(cov_r, 3),
                               "residual_info": {k: (round(v, 4) if isinstance(v, float) else v)
                                                 for k, v in res.info.items()}}
        if seed_rows is not None:
            refit = base
            if len(past):
                refit = EnsembleProxy(target_names=(TARGET,), config=BASE_CONFIG)
                refit.fit(seed_rows.concat(past), warm_start=base)
            row["mae_refit"] = round(_scores(refit, batch)[0], 4)
        out.append(row)
    return out


def _summary(per_round: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    by_round: dict[int, list[dict[str, Any]]] = {}
    for row in per_round:
        by_round.setdefault(row["round"], []).append(row)
    out = {}
    for r, rows in sorted(by_round.items()):
        n = sum(x["n_batch"] for x in rows)
        out[str(r)] = {"n": n, **{k: round(sum(x[k] * x["n_batch"] for x in rows) / n, 4) for k in keys}}
    return out


def run(path: Path = DEFAULT_PATH, *, pooled_batch: int = 40, ablation: bool = True) -> dict[str, Any]:
    t0 = time.perf_counter()
    rows = read_calls(path)
    seed_rows = load_mp20("train", TARGET).data
    base = EnsembleProxy(target_names=(TARGET,), config=BASE_CONFIG)
    fit = base.fit(seed_rows)
    result: dict[str, Any] = {"calls": len(rows), "labels_ok": sum(bool(r["label_ok"]) for r in rows),
                              "base": {"n_train": fit.n_train, "config": "5 members × 128 hidden × 3 layers, 60 epochs",
                                       "val_mae": round(fit.validation[TARGET]["mae"], 4)}}
    config = ResidualConfig()
    loop_rows = []
    for seed in sorted({r["seed"] for r in rows if r["strategy"] == "loop"}):
        mine = [r for r in rows if r["strategy"] == "loop" and r["seed"] == seed]
        n_rounds = max(r["round"] for r in mine) + 1
        rounds = [labels([r for r in mine if r["round"] == k]) for k in range(n_rounds)]
        for row in replay(base, rounds, config=config, seed_rows=seed_rows):
            loop_rows.append({"seed": seed, **row})
    keys = ("mae_base", "mae_residual", "mae_refit", "coverage90_base", "coverage90_residual")
    later = [x for x in loop_rows if x["n_labels_before"] > 0]
    result["loop"] = {"per_round_mean": _summary(loop_rows, keys),
                      "batches_with_labels": {"n": len(later),
                                              "residual_better": sum(x["mae_residual"] < x["mae_base"] for x in later),
                                              "residual_worse": sum(x["mae_residual"] > x["mae_base"] for x in later)},
                      "per_seed": loop_rows}
    order = sorted(rows, key=lambda r: (r["call"], r["strategy"], r["seed"]))
    blocks = [labels(order[i:i + pooled_batch]) for i in range(0, len(order), pooled_batch)]
    pooled = replay(base, blocks, config=config)
    result["pooled"] = {"batch_calls": pooled_batch, "per_round": pooled}
    if ablation:
        ab = {}
        for name, cfg in ABLATIONS.items():
            per = pooled if name == "default (magpie)" else replay(base, blocks, config=cfg)
            later = [x for x in per if x["round"] >= 1]
            n = sum(x["n_batch"] for x in later)
            ab[name] = {k: round(sum(x[k] * x["n_batch"] for x in later) / n, 4)
                        for k in ("mae_base", "mae_residual", "coverage90_residual")}
        result["ablation_pooled_rounds_ge_1"] = ab
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH, help="evaluated.jsonl of a discovery benchmark")
    parser.add_argument("--pooled-batch", type=int, default=40, help="calls per round in the pooled replay")
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON (else per-round MAE)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = run(args.path, pooled_batch=args.pooled_batch, ablation=not args.no_ablation)
    if args.json:
        print(json.dumps(result, indent=1, default=float))
        return
    for name, table in (("loop (mean over seeds)", result["loop"]["per_round_mean"]),):
        print(name)
        for r, v in table.items():
            print(f"  round {r}: n={v['n']} base {v['mae_base']:.3f} residual {v['mae_residual']:.3f} "
                  f"refit {v['mae_refit']:.3f}")
    print("pooled")
    for v in result["pooled"]["per_round"]:
        print(f"  round {v['round']}: n={v['n_batch']} labels {v['n_labels_before']} base {v['mae_base']:.3f} "
              f"residual {v['mae_residual']:.3f}")


if __name__ == "__main__":
    main()
