"""The benchmark's report: markdown tables (``results.md``) and the plot (``discovery.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from orchestration.bench_discovery.settings import ALL_STRATEGIES

COLORS: dict[str, str] = dict(zip(ALL_STRATEGIES, ("C3", "C0", "C1", "C2", "C4"), strict=True))


def _ci(v: list[Any]) -> str:
    return f"[{'–' if v[0] is None else v[0]}, {'unbounded' if v[1] is None else v[1]}]"


def markdown(result: dict[str, Any]) -> str:
    """The benchmark's table (one row per strategy) and the loop-vs-random ratios, as markdown; with S.U.N.
    results (``--objective sun``) the S.U.N. tables of :func:`sun_markdown` follow."""
    ci = _ci

    lines = ["| strategy | oracle calls | ok | unique hits E_hull ≤ 0.1 | per 100 calls (95 % CI) | unique hits E_hull ≤ 0 "
             "| per 100 calls (95 % CI) | hits ≤ 0.1 in covered systems | per 100 calls (95 % CI) | distinct hit formulas "
             "| hits ≤ 0.1 with a formula new to the reference |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in result["strategies"].items():
        lines.append(
            f"| {name} | {s['oracle_calls']} | {s['ok']} | {s['unique_hits_ehull_le_0p1']} "
            f"({'+'.join(map(str, s['unique_hits_ehull_le_0p1_per_seed']))}) | {s['unique_hits_ehull_le_0p1_per_100_calls']} "
            f"{ci(s['unique_hits_ehull_le_0p1_per_100_calls_ci95'])} | {s['unique_hits_ehull_le_0']} | "
            f"{s['unique_hits_ehull_le_0_per_100_calls']} {ci(s['unique_hits_ehull_le_0_per_100_calls_ci95'])} | "
            f"{s.get('unique_hits_ehull_le_0p1_covered', '–')} | {s.get('unique_hits_ehull_le_0p1_covered_per_100_calls', '–')} "
            f"{ci(s.get('unique_hits_ehull_le_0p1_covered_per_100_calls_ci95', ['–', '–']))} | "
            f"{s['diversity_of_hits']['distinct_formulas_all_seeds']} | {s.get('unique_hits_ehull_le_0p1_new_composition', '–')} |")
    lines.append("")
    for key, label in (("ratio_loop_vs_random", "E_hull ≤ 0.1"), ("ratio_loop_vs_random_ehull_le_0", "E_hull ≤ 0"),
                       ("ratio_loop_vs_random_covered", "E_hull ≤ 0.1, covered systems")):
        if key in result:
            value = "undefined (random found no unique hit)" if result[key] is None else result[key]
            lines.append(f"- loop / random, unique hits per oracle call ({label}): **{value}** "
                         f"(95 % CI {ci(result[key + '_ci95'])})")
    # under --objective sun, loop_vs compares S.U.N. results and the unique-hit comparison is loop_vs_unique_hits
    unique_vs = result["loop_vs_unique_hits"] if "loop_vs_unique_hits" in result else result.get("loop_vs", {})
    for name, c in unique_vs.items():
        ratio = "undefined" if c["ratio"] is None else c["ratio"]
        lines.append(f"- loop − {name}, unique hits (E_hull ≤ 0.1) per 100 calls: **{c['difference_per_100_calls']:+}** "
                     f"(95 % CI [{c['difference_ci95'][0]}, {c['difference_ci95'][1]}]; ratio {ratio}, CI {ci(c['ratio_ci95'])}); "
                     f"clearly more: {'yes' if c['clearly_more'] else 'no'}")
    text = "\n".join(lines) + "\n"
    if any("sun_per_100" in s for s in result["strategies"].values()) or "loop_vs_unique_hits" in result:
        text += "\n" + sun_markdown(result)
    return text


def sun_markdown(result: dict[str, Any]) -> str:
    """S.U.N. per 100 calls per strategy, the loop against each baseline, and the loop per round and source."""
    lines = ["| strategy | oracle calls | S.U.N. | per 100 calls (95 % CI) | distinct S.U.N. formulas | "
             "S.U.N. with a new formula | 0-D hits (not S.U.N.) |", "|---|---|---|---|---|---|---|"]
    for name, s in result["strategies"].items():
        if "sun_per_100" not in s:
            continue
        lines.append(f"| {name} | {s['oracle_calls']} | {s['sun']} ({'+'.join(map(str, s['sun_per_seed']))}) | "
                     f"{s['sun_per_100']} {_ci(s['sun_per_100_ci95'])} | {s['distinct_sun_formulas']} | "
                     f"{s['sun_counts'].get('sun_novel_formula', '–')} | {s['zero_dimensional_hits']} |")
    lines.append("")
    if "loop_vs_unique_hits" in result:
        for name, c in result.get("loop_vs", {}).items():
            ratio = "undefined" if c["ratio"] is None else c["ratio"]
            f = c.get("distinct_sun_formulas", {})
            lines.append(f"- loop − {name}, S.U.N. per 100 calls: **{c['difference_per_100_calls']:+}** (95 % CI "
                         f"[{c['difference_ci95'][0]}, {c['difference_ci95'][1]}]; ratio {ratio}, CI {_ci(c['ratio_ci95'])}); "
                         f"clearly more: {'yes' if c['clearly_more'] else 'no'}; distinct S.U.N. formulas "
                         f"{f.get('loop', '–')} vs {f.get(name, '–')}")
    learning = result.get("loop_learning")
    if learning:
        ratio = "undefined" if learning["later_vs_first_ratio"] is None else learning["later_vs_first_ratio"]
        lines.append(f"- loop, S.U.N. per 100 calls in round 0: {learning['sun_per_100_first_round']}, in later rounds: "
                     f"{learning['sun_per_100_later_rounds']} (ratio {ratio}, CI {_ci(learning['later_vs_first_ratio_ci95'])}); "
                     f"proxy error falls every round: {'yes' if learning['proxy_error_falls_every_round'] else 'no'}")
    loop = result["strategies"].get("loop", {})
    if loop.get("sun_by_round"):
        errors = loop.get("proxy_error_by_round", {})
        lines += ["", "| loop round | calls | S.U.N. | per 100 calls (95 % CI) | proxy MAE before labelling (eV/atom) |",
                  "|---|---|---|---|---|"]
        for r, v in loop["sun_by_round"].items():
            mae = errors.get(r, {}).get("mae", "–")
            lines.append(f"| {r} | {v['calls']} | {v['sun']} | {v['per_100']} {_ci(v['per_100_ci95'])} | {mae} |")
        lines += ["", "| loop source | calls | S.U.N. | per 100 calls (95 % CI) |", "|---|---|---|---|"]
        for src, v in loop.get("sun_by_source", {}).items():
            lines.append(f"| {src} | {v['calls']} | {v['sun']} | {v['per_100']} {_ci(v['per_100_ci95'])} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], out: Path) -> Path:
    """Two panels: cumulative unique hits (E_hull ≤ 0.1) and best E_hull so far, against oracle calls; a third,
    cumulative S.U.N. results, when the summary has them (thin lines: seeds, thick: their mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sun = any("cumulative_sun" in s for s in summary["strategies"].values())
    fig, axes = plt.subplots(1, 3 if sun else 2, figsize=(16 if sun else 11, 4))
    panels = [("cumulative_unique_hits_ehull_le_0p1", axes[0]), ("best_e_above_hull_so_far", axes[1])]
    if sun:
        panels.append(("cumulative_sun", axes[2]))
        axes[2].set(xlabel="oracle calls", ylabel="S.U.N. results", title="cumulative S.U.N.")
    for name, s in summary["strategies"].items():
        for key, ax in panels:
            if key not in s:
                continue
            curves = [np.array([np.nan if v is None else v for v in c], dtype=float) for c in s[key]]
            n = min(len(c) for c in curves) if curves else 0
            if not n:
                continue
            x = np.arange(1, n + 1)
            for c in curves:
                ax.plot(np.arange(1, len(c) + 1), c, color=COLORS.get(name, "k"), alpha=0.25, lw=1)
            ax.plot(x, np.nanmean(np.stack([c[:n] for c in curves]), axis=0), color=COLORS.get(name, "k"), lw=2, label=name)
    axes[0].set(xlabel="oracle calls", ylabel="unique hits (E_hull ≤ 0.1 eV/atom)", title="cumulative unique hits")
    axes[1].set(xlabel="oracle calls", ylabel="best E_hull so far (eV/atom)", title="best so far")
    for ax in (axes[0], axes[2]) if sun else (axes[0],):
        ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

