"""Discovery benchmark: stable unique hits per oracle call of the full loop against baselines.

Five strategies, each given the same oracle budget (``budget`` CHGNet relaxations per seed) in the
same search space (:data:`BENCH_SPACE`), with the same oracle settings and the same hull reference:

1. ``loop``: the full matloop campaign (proxy fit → Crystal-GFN training → sample → dedupe → MMR
   batch → CHGNet), ``rounds`` rounds run by :func:`orchestration.flows.campaign_flow` on a config
   built here (SQLite store, no MLflow), capped at ``budget`` oracle calls;
2. ``random``: :class:`discovery.baselines.RandomCrystalSampler` (uniform over SMACT-valid,
   Wyckoff-compatible compositions, compatible space groups and lattices), the first ``budget``
   distinct (reduced formula, space group) crystals, not seen in the seed data;
3. ``random_proxy``: ``rounds × candidates_per_round`` random crystals scored by the loop's
   round-0 proxy with the loop's acquisition, ``budget`` chosen by the loop's selection (MMR);
4. ``gfn_once``: the loop's round-0 Crystal-GFN (trained once on the round-0 proxy, never
   retrained), ``rounds × candidates_per_round`` samples, scored and selected like (3);
5. ``substitution_once`` (``--objective sun``): ``rounds × candidates_per_round`` isovalent substitutions
   (full and partial, :mod:`discovery.substitution`) into the seed data's structures within 0.05 eV/atom of
   the hull, scored and selected like (3) in one shot, relaxed as the structures they are.

Strategies 3–5 reuse the loop's round-0 proxy and generator checkpoints (same seed, identical to
what a separate run would fit). A *hit* is an oracle result with status ``ok`` and
``e_above_hull`` ≤ 0.1 eV/atom (and, stricter, ≤ 0) against the benchmark's hull reference
(``reference``, default ``mp20+matbench``: MP-20, the complete Li-Fe-O system and 130k MatBench MP
formation energies moved to the MP2020 scale, see :mod:`oracles.reference`; the oracle labels every
strategy against it); hits are *unique* after removing relaxed structures that pymatgen's
``StructureMatcher`` (ltol 0.2, stol 0.3, angle_tol 5°; :func:`discovery.selection.unique_structures`)
finds equal to an earlier hit of the same strategy and seed. Rates are unique hits per 100 oracle
calls (failed relaxations count as calls); confidence intervals are percentile bootstraps over seeds.
``sun`` (``sun_counts``: stable, novel, unique, 0-D hits, ...) labels each strategy's calls with the
campaign's S.U.N. labels (:mod:`discovery.sun`, :func:`sun_counts`).
``*_covered`` counts only hits in chemical systems (or subsystems) where the reference holds at least
one compound: with the sparse ``mp20+li-fe-o`` reference many systems hold none, and there any
negative formation energy is a "hit".

``objective`` sets what the loop's acquisition (and so strategies 3–5) scores:
``formation_energy`` (default: UCB on the predicted formation energy), ``hull`` (UCB on the predicted
distance to the reference hull, ``acquisition.relative_to_hull``) or ``sun``: the hull objective with the
loop's learning features on (:func:`~orchestration.bench_discovery.settings.sun_loop_features`: novelty
penalty, substitution source, residual proxy, fresh generator with offline replay, selection across
rounds); the loop is then compared with each baseline on S.U.N. results per 100 calls (``loop_vs``), and the
report adds S.U.N. per round and per source, distinct S.U.N. formulas, 0-D hits (reported, never S.U.N.) and
the proxy's error on each round's batch before labelling.

Modules: :mod:`.settings` (settings, the loop's config), :mod:`.strategies` (the loop and the baselines),
:mod:`.metrics` (per-run metrics), :mod:`.statistics` (bootstrap CIs, comparisons, summary),
:mod:`.report` (markdown, plot), :mod:`.runner` (the driver and its per-seed cache).
"""

from orchestration.bench_discovery.metrics import (
    counts_by,
    covered,
    known_formula,
    proxy_error_by_round,
    strategy_metrics,
    sun_counts,
    sun_labels,
    sun_metrics,
    unique_hit_flags,
)
from orchestration.bench_discovery.report import markdown, plot, sun_markdown
from orchestration.bench_discovery.runner import _load_cache, _save_cache, run_baseline, run_benchmark
from orchestration.bench_discovery.settings import (
    ALL_STRATEGIES,
    BENCH_SPACE,
    DEFAULT_BUDGET,
    DEFAULT_FAMILY_WEIGHT,
    DEFAULT_MAX_SD,
    DEFAULT_RATTLE,
    DEFAULT_SEEDS,
    DEFAULT_SPLIT_RULE,
    HIT_THRESHOLDS,
    OBJECTIVES,
    STRATEGIES,
    SUN_STRATEGIES,
    BenchSettings,
    Evaluated,
    Objective,
    campaign_config,
    default_strategies,
    search_space,
    sun_loop_features,
)
from orchestration.bench_discovery.statistics import (
    bootstrap_difference,
    bootstrap_rate,
    bootstrap_ratio,
    compare_loop,
    compare_sun,
    later_vs_first_round,
    pooled_by,
    pooled_proxy_error,
    summarize,
    sun_summary,
)

__all__ = [
    "ALL_STRATEGIES",
    "BENCH_SPACE",
    "DEFAULT_BUDGET",
    "DEFAULT_FAMILY_WEIGHT",
    "DEFAULT_MAX_SD",
    "DEFAULT_RATTLE",
    "DEFAULT_SEEDS",
    "DEFAULT_SPLIT_RULE",
    "HIT_THRESHOLDS",
    "OBJECTIVES",
    "STRATEGIES",
    "SUN_STRATEGIES",
    "BenchSettings",
    "Evaluated",
    "Objective",
    "_load_cache",
    "_save_cache",
    "bootstrap_difference",
    "bootstrap_rate",
    "bootstrap_ratio",
    "campaign_config",
    "compare_loop",
    "compare_sun",
    "counts_by",
    "covered",
    "default_strategies",
    "known_formula",
    "later_vs_first_round",
    "markdown",
    "plot",
    "pooled_by",
    "pooled_proxy_error",
    "proxy_error_by_round",
    "run_baseline",
    "run_benchmark",
    "search_space",
    "strategy_metrics",
    "summarize",
    "sun_counts",
    "sun_labels",
    "sun_loop_features",
    "sun_markdown",
    "sun_metrics",
    "sun_summary",
    "unique_hit_flags",
]
