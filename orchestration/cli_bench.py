"""`matloop bench` commands: speed benchmarks that print JSON.

Each benchmark lives beside its command group and is registered here; ``bench discovery`` (the
discovery benchmark of the whole loop against baselines) lives in the package :mod:`orchestration.bench_discovery`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestration.cli_decode import bench_decoder_command
from orchestration.cli_gfn import bench_gfn
from orchestration.cli_oracle import bench_oracle
from orchestration.cli_proxy import bench_proxy
from orchestration.errors import fail

app = typer.Typer(help="Speed benchmarks (print one JSON object with --json).", no_args_is_help=True)
app.command("gfn")(bench_gfn)
app.command("oracle")(bench_oracle)
app.command("proxy")(bench_proxy)
app.command("decoder")(bench_decoder_command)


@app.command("discovery")
def bench_discovery(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object (the only output on stdout).")] = False,
    budget: Annotated[int | None, typer.Option(min=1, help="Oracle calls (CHGNet relaxations) per strategy and seed "
                                                      "(default: 60 with --objective sun, else 24).")] = None,
    seeds: Annotated[int | None, typer.Option(min=1, help="Independent repetitions (seeds 0..K-1) "
                                                      "(default: 3 with --objective sun, else 2).")] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds of the full loop (batch = budget / rounds).")] = 3,
    candidates: Annotated[int, typer.Option(min=1, help="Generator samples per round (and random pool size per round).")] = 300,
    gfn_iterations: Annotated[int, typer.Option(min=0, help="Crystal-GFN iterations in round 0.")] = 150,
    gfn_iterations_per_round: Annotated[int, typer.Option(min=0, help="Fine-tuning iterations in later rounds.")] = 50,
    strategies: Annotated[str | None, typer.Option(help="Comma-separated subset of loop,random,random_proxy,gfn_once"
                                                        ",substitution_once (default: the first four; all five with "
                                                        "--objective sun).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="CHGNet worker processes (one torch thread each).")] = 2,
    device: Annotated[str, typer.Option(help="cpu or cuda for the generator and CHGNet (the proxy runs on the CPU); on a GPU machine more --workers on the CPU were faster, see docs/benchmarks.md.")] = "cpu",
    reference: Annotated[str, typer.Option(help="Hull reference for hits and the oracle: mp20+matbench (dense) or "
                                                "mp20+li-fe-o (sparse).")] = "mp20+matbench",
    objective: Annotated[str, typer.Option(help="What the loop's acquisition scores: 'hull' (predicted distance to the "
                                                "reference hull), 'formation_energy', or 'sun': the hull objective with "
                                                "the loop's learning features (novelty penalty, substitution source, "
                                                "residual proxy, fresh generator with offline replay, selection across "
                                                "rounds), compared on S.U.N. results per 100 calls.")] = "formation_energy",
    oracle_weight: Annotated[float | None, typer.Option(min=1.0, help="The loop's proxy.oracle_weight: how much each "
                                                            "oracle label counts against a seed row in the refit "
                                                            "(default: 10 with --objective sun, else 1).")] = None,
    seed_rows: Annotated[int | None, typer.Option(min=1, help="Labelled MP-20 rows the round-0 proxy starts from "
                                                  "(default: all); few rows is a cold start, where the proxy must "
                                                  "learn from the oracle.")] = None,
    substitution_share: Annotated[float, typer.Option(min=0.0, max=1.0, help=(
        "--objective sun: the loop's share of substitutions in its first round (then adaptive); 1.0 runs a "
        "substitution-only loop (every round, no split), 0.0 a generator-only loop."))] = 0.5,
    rattle: Annotated[float | None, typer.Option(min=0.0, max=0.5, help=(
        "Å the CHGNet oracle moves decoded atoms off their special positions before relaxing, for every strategy "
        "(default: 0.05 with --objective sun, else 0).")) ] = None,
    optimizer: Annotated[str, typer.Option(help=(
        "The CHGNet oracle's optimizer for every strategy: FIRE (torch-sim's) or BFGS (ASE's, on the same batched "
        "engine).")) ] = "FIRE",
    split_rule: Annotated[str | None, typer.Option(help=(
        "--objective sun: how the loop's later rounds split the batch between sources: 'thompson' (the share "
        "Thompson sampling gives the source more likely to be better) or 'proportional' (to the posterior mean "
        "S.U.N. rates) (default: thompson with --objective sun).")) ] = None,
    max_sd: Annotated[float | None, typer.Option(min=0.0, help=(
        "Cap (eV/atom) on the proxy's σ in the loop's acquisition (its generator reward and ranking, and the "
        "round-0 scoring of random + proxy and GFN once); 0 leaves σ uncapped (default: 0.5 with --objective "
        "sun, else uncapped).")) ] = None,
    family_weight: Annotated[float | None, typer.Option(min=0.0, help=(
        "--objective sun: eV/atom per unit of success probability that the loop's later rounds add to a "
        "substitution's score for its parent family's S.U.N. rate so far (sources.substitution.family_weight; 0: "
        "off) (default: 3 with --objective sun).")) ] = None,
    family_std: Annotated[float, typer.Option(min=0.0, max=5.0, help=(
        "--objective sun: prior median (eV/atom) of an offset the loop's residual proxy shares between the "
        "crystals of one substitution family (proxy.residual_family_std; 0: off).")) ] = 0.0,
    out: Annotated[Path, typer.Option(help="Directory for campaigns, results.json, evaluated.jsonl and discovery.png.")] = Path("runs/bench-discovery"),
) -> None:
    """Stable unique hits per oracle call: the full loop vs random search, random + proxy filter, and a
    GFlowNet trained once (same CHGNet budget, same search space; see orchestration/bench_discovery/).
    With --objective sun: S.U.N. results per 100 calls of the learning loop vs those and "substitution once"
    (substitutions into near-hull seed structures, the whole budget in one shot), with paired-bootstrap CIs,
    S.U.N. per round and per source, and the proxy's error on each round's batch.

    Hits are judged against the dense MP hull reference (mp20+matbench) by default. The --objective sun
    defaults (3 seeds) took 23 min on a 2-core machine (docs/results/discovery.md); finished baselines are cached in
    --out, so a rerun with more seeds only runs the new ones.

    Example: matloop bench discovery --budget 24 --seeds 2 --json; matloop bench discovery --objective sun;
    matloop bench discovery --objective sun --strategies loop,substitution_once --substitution-share 1.0
    """
    from orchestration.cli_campaign import _progress as campaign_progress
    from orchestration.cli_campaign import exit_on_sigterm, prefect_environment

    prefect_environment()
    import torch

    from orchestration.bench_discovery import (
        DEFAULT_BUDGET,
        DEFAULT_FAMILY_WEIGHT,
        DEFAULT_MAX_SD,
        DEFAULT_RATTLE,
        DEFAULT_SEEDS,
        DEFAULT_SPLIT_RULE,
        OBJECTIVES,
        BenchSettings,
        run_benchmark,
    )
    from orchestration.campaign.progress import step

    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    torch.set_num_threads(1)
    if objective not in OBJECTIVES:
        fail(f"unknown objective {objective!r}; choose {', '.join(OBJECTIVES)}")
    try:
        settings = BenchSettings(budget=DEFAULT_BUDGET[objective] if budget is None else budget,
                                 seeds=DEFAULT_SEEDS[objective] if seeds is None else seeds, rounds=rounds, candidates_per_round=candidates,
                                 gfn_iterations_first=gfn_iterations, gfn_iterations_per_round=gfn_iterations_per_round,
                                 workers=workers, device=device, reference=reference,
                                 objective=objective,  # type: ignore[arg-type]  # checked by BenchSettings
                                 oracle_weight=oracle_weight, seed_rows=seed_rows,
                                 substitution_share=substitution_share,
                                 decode_rattle=DEFAULT_RATTLE[objective] if rattle is None else rattle,
                                 optimizer=optimizer,  # type: ignore[arg-type]  # checked by BenchSettings
                                 split_rule=(DEFAULT_SPLIT_RULE[objective] if split_rule is None  # type: ignore[arg-type]
                                             else split_rule),  # checked by BenchSettings
                                 max_sd=DEFAULT_MAX_SD[objective] if max_sd is None else (max_sd or None),
                                 family_weight=DEFAULT_FAMILY_WEIGHT[objective] if family_weight is None else family_weight,
                                 family_std=family_std,
                                 strategies=tuple(s.strip() for s in (strategies or "").split(",") if s.strip()))
    except ValueError as exc:
        fail(str(exc))
    if "loop" not in settings.strategies:
        fail("--strategies must include loop (the other strategies reuse its round-0 proxy and generator)")
    bars: dict[str, tuple[Any, Callable[[float], None]]] = {}

    def progress(desc: str, done: int, total: int) -> None:
        if desc not in bars:
            ctx = step(desc, total=total)
            bars[desc] = (ctx, ctx.__enter__())
        ctx, update = bars[desc]
        update(done)
        if done >= total:
            ctx.__exit__(None, None, None)

    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)  # pymatgen's per-entry compatibility notes
    with exit_on_sigterm(f"finished strategies and seeds are kept in {out}; the same command continues"), \
            campaign_progress(True):
        result = run_benchmark(settings, out, progress=progress)
    if json_out:
        print(json.dumps(result))
    else:
        from rich.console import Console

        console = Console()
        for name, c in result["counts"].items():
            console.print(f"{name:>14}: {c}")
        if objective == "sun":
            for name, s in result["strategies"].items():
                console.print(f"{name:>18}: S.U.N. per 100 calls {s.get('sun_per_100')} (95 % CI {s.get('sun_per_100_ci95')})")
            for name, c in result.get("loop_vs", {}).items():
                console.print(f"loop − {name}: {c['difference_per_100_calls']:+} S.U.N. per 100 calls "
                              f"(95 % CI {c['difference_ci95']}), clearly more: {c['clearly_more']}")
        console.print(f"ratio_loop_vs_random: {result.get('ratio_loop_vs_random')}  "
                      f"(95 % CI {result.get('ratio_loop_vs_random_ci95')}); results in {out}")
