"""Reproduction of the Crystal-GFN paper's sampling experiments (AI4Mat @ NeurIPS 2023).

:func:`run_reproduction` samples ``n`` crystals from the FE-trained, the untrained and (optionally)
the BG-trained model, predicts their properties with the proxies, and computes the paper's
figures next to ours (:data:`PAPER`): formation-energy median and 95th percentile, share below the
MP hull, uniqueness, elements and space groups present (overall, top 100), crystal-lattice systems
and point symmetries of the top 100, validity (SMACT, pyxtal, lattice system, plus exact Wyckoff),
the band-gap distribution around the target, and the restricted-sampling experiments A–D. It
writes ``metrics.json``, ``metrics.md`` and PNG plots.

"Below the MP hull" for a generated crystal (no coordinates, no DFT): its *predicted* formation
energy is below the convex hull of its chemical system, i.e. ``e_above_hull(composition, predicted
E_form) < 0`` with pymatgen's ``PhaseDiagram``, against the dense reference
``oracles.reference.load_reference("mp20+matbench")`` (MP elemental references at 0, every MP-20
entry, the full MP Li-Fe-O system and 130k MatBench MP formation energies moved to the MP2020 scale):
the closest to the paper's full MP hull that ships (``share_below_hull``). The same share against the
sparse ``"mp20+li-fe-o"`` reference (2,369 near-hull MP-20 entries: an upper bound) is
``share_below_hull_mp20``.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from discovery.crystal import Crystal
from discovery.symmetry import space_group

# The paper's figures (design notes §3; 10,000 samples of the FE-trained model unless stated).
PAPER: dict[str, Any] = {
    "fe_median": -3.2,
    "fe_p95": -2.0,  # "95 % below −2.0 eV/atom"
    "validation_fe_median": -2.0,
    "share_below_hull": 0.656,
    "unique": 1.0,
    "elements_present": 22,
    "elements_top100": 15,
    "space_groups_present": "73 of 113 (65 %)",
    "valid_smact": 0.84,
    "valid_pyxtal": 1.0,
    "valid_lattice": 1.0,
}

RESTRICTIONS: dict[str, dict[str, Any]] = {
    "A: Fe-O, ≤ 10 atoms per element": {"elements": ["Fe", "O"], "max_atoms_per_element": 10},
    "B: Li-Mn-O, ≤ 16 atoms per element": {"elements": ["Li", "Mn", "O"], "max_atoms_per_element": 16},
    "C: cubic only": {"crystal_lattice_systems": ["cubic"]},
    "D: lengths 10–20 Å, angles 75–135°": {"length_range": (10.0, 20.0), "angle_range": (75.0, 135.0)},
}


@dataclass
class SampleSet:
    name: str
    crystals: list[Crystal]
    seconds: float


def unique_fraction(crystals: Sequence[Crystal]) -> float:
    """Share of distinct crystals: (space group, composition, lattice rounded to 1e-6)."""
    keys = {(c.space_group, tuple(sorted(c.counts.items())), tuple(round(x, 6) for x in c.lattice)) for c in crystals}
    return len(keys) / max(1, len(crystals))


def below_hull_flags(crystals: Sequence[Crystal], e_form: np.ndarray, reference: Any) -> np.ndarray:
    """(n,) bool: predicted formation energy (eV/atom) below the reference hull of the crystal's system."""
    from pymatgen.core import Composition

    out = np.zeros(len(crystals), dtype=bool)
    for i, (c, e) in enumerate(zip(crystals, e_form, strict=True)):
        if math.isfinite(float(e)):
            out[i] = reference.e_above_hull(Composition(c.counts), float(e)) < 0
    return out


def composition_metrics(crystals: Sequence[Crystal], order: np.ndarray, *, top: int = 100) -> dict[str, Any]:
    """Elements, space groups, crystal-lattice systems and point symmetries: overall and in the ``top``
    crystals (``order``: indices best first)."""
    best = [crystals[int(i)] for i in order[:top]]
    return {
        "elements_present": len({el for c in crystals for el in c.counts}),
        f"elements_top{top}": len({el for c in best for el in c.counts}),
        "space_groups_present": len({c.space_group for c in crystals}),
        f"space_groups_top{top}": len({c.space_group for c in best}),
        f"crystal_lattice_systems_top{top}": dict(Counter(space_group(c.space_group).crystal_lattice_system for c in best).most_common()),
        f"point_symmetries_top{top}": dict(Counter(space_group(c.space_group).point_symmetry for c in best).most_common()),
        f"top{top}_examples": [f"{c.reduced_formula()} (SG {c.space_group})" for c in best[:5]],
    }


def fe_metrics(crystals: Sequence[Crystal], e_form: np.ndarray, reference: Any | None, *, top: int = 100,
               sparse_reference: Any | None = None) -> dict[str, Any]:
    """Formation-energy figures of one sample set (``e_form``: predicted eV/atom, (n,)); the share below the
    hull of ``reference`` and, when given, of ``sparse_reference`` (``share_below_hull_mp20``)."""
    e = np.asarray(e_form, dtype=float)
    out: dict[str, Any] = {
        "n": len(crystals),
        "fe_median": round(float(np.median(e)), 3),
        "fe_p95": round(float(np.percentile(e, 95)), 3),
        "share_fe_below_m2": round(float(np.mean(e < -2.0)), 4),
        "unique": round(unique_fraction(crystals), 4),
        "distinct_formula_space_group": len({(c.reduced_formula(), c.space_group) for c in crystals}),
    }
    if reference is not None:
        out["share_below_hull"] = round(float(below_hull_flags(crystals, e, reference).mean()), 4)
    if sparse_reference is not None:
        out["share_below_hull_mp20"] = round(float(below_hull_flags(crystals, e, sparse_reference).mean()), 4)
    out.update(composition_metrics(crystals, np.argsort(e, kind="stable"), top=top))
    return out


def bg_metrics(values: np.ndarray, *, target: float = 1.34) -> dict[str, Any]:
    """Band-gap figures around ``target`` (eV)."""
    v = np.asarray(values, dtype=float)
    return {
        "n": len(v),
        "bg_median": round(float(np.median(v)), 3),
        "bg_mean_abs_dev_from_target": round(float(np.mean(np.abs(v - target))), 3),
        "share_within_0p2": round(float(np.mean(np.abs(v - target) <= 0.2)), 4),
        "share_within_0p5": round(float(np.mean(np.abs(v - target) <= 0.5)), 4),
        "share_metallic_below_0p1": round(float(np.mean(v < 0.1)), 4),
    }


def validity(crystals: Sequence[Crystal], *, pyxtal_max: int, seed: int = 0) -> dict[str, float]:
    from discovery.gfn.validity import validity_report

    rep = validity_report(crystals, pyxtal_max=pyxtal_max, seed=seed, pyxtal_timeout_s=20)
    return {f"valid_{k}": round(float(v), 4) for k, v in rep.items()}


def predict(proxy: Any, crystals: Sequence[Crystal]) -> np.ndarray:
    """Posterior means (n,) in batches."""
    out = [proxy.posterior(list(crystals[i:i + 4096])).mean[:, 0].numpy() for i in range(0, len(crystals), 4096)]
    return np.concatenate(out).astype(float) if out else np.zeros(0)


# -- plots ----------------------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_distributions(series: dict[str, np.ndarray], *, xlabel: str, out: Path, vline: float | None = None) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    allv = np.concatenate([v[np.isfinite(v)] for v in series.values()])
    lo, hi = np.percentile(allv, [0.5, 99.5])
    bins = np.linspace(lo, hi, 60)
    for name, v in series.items():
        ax.hist(np.clip(v, lo, hi), bins=bins, density=True, histtype="step", lw=1.8, label=f"{name} (median {np.median(v):.2f})")
    if vline is not None:
        ax.axvline(vline, color="k", ls="--", lw=1)
    ax.set(xlabel=xlabel, ylabel="density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_volumes(series: dict[str, np.ndarray], *, vrange: tuple[float, float], out: Path) -> Path:
    """Volume per atom (Å³/atom, log axis; share of each set per log-spaced bin) of each set, with MP-20 train's
    1st–99th percentile band shaded."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    bins = np.logspace(0, 4.5, 80)
    for name, v in series.items():
        v = v[np.isfinite(v)]
        ax.hist(np.clip(v, bins[0], bins[-1]), bins=bins, weights=np.full(len(v), 1.0 / max(len(v), 1)),
                histtype="step", lw=1.8, label=f"{name} (median {np.median(v):.1f})")
    ax.axvspan(*vrange, color="0.85", zorder=0, label=f"MP-20 train 1st–99th pct ({vrange[0]:.1f}–{vrange[1]:.1f})")
    ax.set(xscale="log", xlabel="volume per atom (Å³/atom; clipped to 1–31,600)", ylabel="share of samples per bin")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_elements(sets: dict[str, Sequence[Crystal]], elements: Sequence[str], out: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.8 / len(sets)
    x = np.arange(len(elements))
    for k, (name, crystals) in enumerate(sets.items()):
        share = [np.mean([el in c.counts for c in crystals]) for el in elements]
        ax.bar(x + k * width, share, width=width, label=name)
    ax.set_xticks(x + 0.4 - width / 2, elements)
    ax.set(ylabel="share of crystals containing it")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_space_groups(sets: dict[str, Sequence[Crystal]], out: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for name, crystals in sets.items():
        ax.hist([c.space_group for c in crystals], bins=np.arange(0.5, 231.5, 1), density=True, histtype="step",
                lw=1.2, label=name)
    for edge in (2.5, 15.5, 74.5, 142.5, 167.5, 194.5):
        ax.axvline(edge, color="grey", lw=0.5)
    ax.set(xlabel="space group (lines: crystal-system boundaries)", ylabel="share")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# -- the whole reproduction -------------------------------------------------------------------------------
def run_reproduction(*, fe_checkpoint: Path, fe_proxy: Path, out: Path, n: int = 10_000,
                     bg_checkpoint: Path | None = None, bg_proxy: Path | None = None, target_gap: float = 1.34,
                     n_restricted: int = 2000, pyxtal_max: int = 200, seed: int = 0, device: str = "cpu",
                     volume_baseline: Path | None = None,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Sample, predict, measure, plot; returns the metrics (also in ``out/metrics.json``).

    ``volume_baseline``: a ``volume_per_atom.npy`` written by ``matloop gfn check --out`` for another
    model (e.g. the checkpoint trained before the lattice prior), drawn beside ours in the volume plot."""
    from discovery.datasets import load_mp20
    from discovery.gfn import CrystalGFN
    from discovery.proxy import EnsembleProxy
    from discovery.proxy.lattice import volumes_per_atom
    from oracles.reference import load_reference
    from orchestration.physical_check import mp20_volume_range, volume_metrics

    say = progress or (lambda _m: None)
    out.mkdir(parents=True, exist_ok=True)
    fe_model = CrystalGFN.load(fe_checkpoint, device=device)
    untrained = CrystalGFN(fe_model.space, device=device, seed=seed, policy=fe_model.policy_cfg, train=fe_model.train_cfg)
    fe_proxy_m = EnsembleProxy.load(fe_proxy)
    reference, sparse = load_reference("mp20+matbench"), load_reference("mp20+li-fe-o")

    def draw(name: str, model: CrystalGFN, k: int, space: Any = None) -> SampleSet:
        say(f"sampling {k} crystals: {name}")
        t0 = time.perf_counter()
        crystals = model.sample(k, seed=seed + 1, space=space)
        return SampleSet(name, crystals, time.perf_counter() - t0)

    sets = {"FE-trained": draw("FE-trained", fe_model, n), "untrained": draw("untrained", untrained, n)}
    result: dict[str, Any] = {"n": n, "space": fe_model.space.to_dict(),
                              "feasible_space_groups": len(fe_model.space.feasible_space_groups),
                              "checkpoints": {"fe": str(fe_checkpoint), "bg": str(bg_checkpoint) if bg_checkpoint else None},
                              "iterations": {"fe": fe_model.iterations_done}, "paper": PAPER, "models": {}}
    val_fe = load_mp20("val", "formation_energy_per_atom").data
    vrange = mp20_volume_range()
    fe_pred: dict[str, np.ndarray] = {}
    for name, s in sets.items():
        say(f"formation-energy metrics: {name}")
        fe_pred[name] = predict(fe_proxy_m, s.crystals)
        m = fe_metrics(s.crystals, fe_pred[name], reference, sparse_reference=sparse)
        say(f"validity checks: {name}")
        m.update(validity(s.crystals, pyxtal_max=pyxtal_max, seed=seed))
        m["samples_per_s"] = round(len(s.crystals) / s.seconds, 1)
        m["volume"] = volume_metrics(s.crystals, vrange=vrange)
        result["models"][name] = m
    result["validation"] = {"n": len(val_fe), "fe_median": round(float(np.median(val_fe.targets[:, 0])), 3),
                            "fe_p95": round(float(np.percentile(val_fe.targets[:, 0], 95)), 3)}
    plots = {
        "fe_distribution": plot_distributions(
            {"FE-trained (predicted)": fe_pred["FE-trained"], "untrained (predicted)": fe_pred["untrained"],
             "MP-20 validation (DFT)": val_fe.targets[:, 0]}, xlabel="formation energy (eV/atom)",
            out=out / "fe_distribution.png"),
        "elements": plot_elements({k: s.crystals for k, s in sets.items()}, fe_model.space.elements, out / "elements.png"),
        "space_groups": plot_space_groups({k: s.crystals for k, s in sets.items()}, out / "space_groups.png"),
    }
    volumes = {"FE-trained": volumes_per_atom(sets["FE-trained"].crystals),
               "untrained": volumes_per_atom(sets["untrained"].crystals),
               "MP-20 train": volumes_per_atom(load_mp20("train").data.crystals)}
    if volume_baseline is not None:
        volumes["FE-trained before the lattice prior"] = np.load(volume_baseline)
        result["volume_baseline"] = str(volume_baseline)
    if bg_checkpoint is not None and bg_proxy is not None:
        bg_model = CrystalGFN.load(bg_checkpoint, device=device)
        result["iterations"]["bg"] = bg_model.iterations_done
        bg = draw("BG-trained", bg_model, n)
        bg_proxy_m = EnsembleProxy.load(bg_proxy)
        val_bg = load_mp20("val", "band_gap").data.targets[:, 0]
        say("band-gap metrics")
        bg_pred = {"BG-trained": predict(bg_proxy_m, bg.crystals), "untrained": predict(bg_proxy_m, sets["untrained"].crystals),
                   "FE-trained": predict(bg_proxy_m, sets["FE-trained"].crystals)}
        result["band_gap"] = {name: bg_metrics(v, target=target_gap) for name, v in bg_pred.items()}
        result["band_gap"]["validation"] = bg_metrics(val_bg, target=target_gap)
        bgm = result["band_gap"]["BG-trained"]
        bgm.update(fe_metrics(bg.crystals, predict(fe_proxy_m, bg.crystals), None))
        bgm.update(validity(bg.crystals, pyxtal_max=pyxtal_max, seed=seed))
        bgm["volume"] = volume_metrics(bg.crystals, vrange=vrange)
        volumes["BG-trained"] = volumes_per_atom(bg.crystals)
        result["band_gap"]["target"] = target_gap
        plots["bg_distribution"] = plot_distributions(
            {"BG-trained (predicted)": bg_pred["BG-trained"], "untrained (predicted)": bg_pred["untrained"],
             "MP-20 validation (DFT)": val_bg}, xlabel="band gap (eV)", out=out / "bg_distribution.png", vline=target_gap)
    plots["volume_per_atom"] = plot_volumes(volumes, vrange=vrange, out=out / "volume_per_atom.png")
    restricted: dict[str, Any] = {}
    for label, kw in RESTRICTIONS.items():
        say(f"restricted sampling {label}")
        space = fe_model.restricted(**kw)
        row: dict[str, Any] = {"restriction": {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}}
        for name, model in (("FE-trained", fe_model), ("untrained", untrained)):
            s = draw(f"{name} {label}", model, n_restricted, space)
            e = predict(fe_proxy_m, s.crystals)
            inside = np.mean([_inside(c, space) for c in s.crystals])
            row[name] = {"fe_median": round(float(np.median(e)), 3), "fe_p95": round(float(np.percentile(e, 95)), 3),
                         "share_inside_restriction": round(float(inside), 4),
                         "distinct_formula_space_group": len({(c.reduced_formula(), c.space_group) for c in s.crystals}),
                         "space_groups_present": len({c.space_group for c in s.crystals}),
                         **validity(s.crystals, pyxtal_max=min(pyxtal_max, 60), seed=seed),
                         "top5": [f"{c.reduced_formula()} (SG {c.space_group})"
                                  for c in (s.crystals[int(i)] for i in np.argsort(e, kind="stable")[:5])]}
        restricted[label] = row
    result["restricted"] = restricted
    result["plots"] = {k: str(v) for k, v in plots.items()}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "metrics.md").write_text(markdown(result))
    return result


def _inside(c: Crystal, space: Any) -> bool:
    lo, hi = space.length_range
    alo, ahi = space.angle_range
    eps = 1e-6
    return (set(c.counts) <= set(space.elements) and max(c.counts.values()) <= space.max_atoms_per_element
            and c.space_group in space.candidate_space_groups
            and all(lo - eps <= x <= hi + eps for x in c.lattice[:3])
            and all(alo - eps <= x <= ahi + eps or abs(x - 120.0) < eps or abs(x - 90.0) < eps for x in c.lattice[3:]))


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * float(x):.1f} %"


def markdown(r: dict[str, Any]) -> str:
    """The metrics as markdown tables, ours beside the paper's."""
    fe, un = r["models"]["FE-trained"], r["models"]["untrained"]
    p = r["paper"]
    n_sg = r["feasible_space_groups"]
    rows = [
        ("predicted E_form median (eV/atom)", fe["fe_median"], un["fe_median"], p["fe_median"]),
        ("predicted E_form 95th percentile (eV/atom)", fe["fe_p95"], un["fe_p95"], f"{p['fe_p95']} (95 % below −2.0)"),
        ("share with predicted E_form < −2.0 eV/atom", _pct(fe["share_fe_below_m2"]), _pct(un["share_fe_below_m2"]), "95 %"),
        ("share below the MP hull (predicted E_form vs MP-20 + MatBench + Li-Fe-O)", _pct(fe.get("share_below_hull")),
         _pct(un.get("share_below_hull")), _pct(p["share_below_hull"])),
        ("share below the sparse MP-20 + Li-Fe-O hull (upper bound)", _pct(fe.get("share_below_hull_mp20")),
         _pct(un.get("share_below_hull_mp20")), "–"),
        ("unique", _pct(fe["unique"]), _pct(un["unique"]), _pct(p["unique"])),
        ("elements present / top 100", f"{fe['elements_present']} / {fe['elements_top100']}",
         f"{un['elements_present']} / {un['elements_top100']}", f"{p['elements_present']} / {p['elements_top100']}"),
        (f"space groups present (of {n_sg} feasible)", f"{fe['space_groups_present']} ({100 * fe['space_groups_present'] / n_sg:.0f} %)",
         f"{un['space_groups_present']} ({100 * un['space_groups_present'] / n_sg:.0f} %)", p["space_groups_present"]),
        ("valid: SMACT (include_alloys=False)", _pct(fe["valid_smact"]), _pct(un["valid_smact"]), _pct(p["valid_smact"])),
        (f"valid: pyxtal from_random ({int(fe['valid_pyxtal_checked'])} distinct pairs checked)", _pct(fe["valid_pyxtal"]),
         _pct(un["valid_pyxtal"]), _pct(p["valid_pyxtal"])),
        ("valid: lattice system", _pct(fe["valid_lattice"]), _pct(un["valid_lattice"]), _pct(p["valid_lattice"])),
        ("valid: exact Wyckoff compatibility", _pct(fe["valid_wyckoff"]), _pct(un["valid_wyckoff"]), "–"),
    ]
    if "volume" in fe:
        fv, uv = fe["volume"], un["volume"]
        lo, hi = fv["mp20_range"]
        rows += [
            ("volume per atom, median (Å³/atom; MP-20 train 18.1)", f"{fv['volume_per_atom_median']:.1f}",
             f"{uv['volume_per_atom_median']:.1f}", "–"),
            (f"share with volume per atom in MP-20 train's 1st–99th pct ({lo:.1f}–{hi:.1f} Å³/atom)",
             _pct(fv["share_inside_mp20_range"]), _pct(uv["share_inside_mp20_range"]), "–"),
            ("share with a lattice length > 30 Å", _pct(fv["share_length_above_30A"]), _pct(uv["share_length_above_30A"]), "–"),
        ]
    lines = [f"Samples per model: {r['n']}; MP-20 validation median E_form {r['validation']['fe_median']} eV/atom "
             f"(paper: {p['validation_fe_median']}).", "",
             "| metric | Crystal-GFN (FE), ours | untrained, ours | paper (FE) |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", "Top 100 by predicted formation energy:", "",
              "| | FE-trained | untrained |", "|---|---|---|",
              f"| crystal-lattice systems | {_counts(fe['crystal_lattice_systems_top100'])} | {_counts(un['crystal_lattice_systems_top100'])} |",
              f"| point symmetries | {_counts(fe['point_symmetries_top100'])} | {_counts(un['point_symmetries_top100'])} |",
              f"| first five | {', '.join(fe['top100_examples'])} | {', '.join(un['top100_examples'])} |"]
    if "band_gap" in r:
        bg = r["band_gap"]
        lines += ["", f"Band gap (target {bg['target']} eV), predicted by the band-gap proxy:", "",
                  "| | BG-trained | FE-trained | untrained | MP-20 validation (DFT) |", "|---|---|---|---|---|"]
        for key, label in (("bg_median", "median (eV)"), ("bg_mean_abs_dev_from_target", "mean |E_g − target| (eV)"),
                           ("share_within_0p2", "share within ±0.2 eV"), ("share_within_0p5", "share within ±0.5 eV"),
                           ("share_metallic_below_0p1", "share < 0.1 eV")):
            vals = [bg[m][key] for m in ("BG-trained", "FE-trained", "untrained", "validation")]
            fmt = (lambda v: _pct(v)) if key.startswith("share") else (lambda v: f"{v}")
            lines.append(f"| {label} | " + " | ".join(fmt(v) for v in vals) + " |")
        b = bg["BG-trained"]
        lines.append(f"\nBG-trained validity: SMACT {_pct(b['valid_smact'])}, pyxtal {_pct(b['valid_pyxtal'])}, lattice "
                     f"{_pct(b['valid_lattice'])}, unique {_pct(b['unique'])}; elements {b['elements_present']}, "
                     f"space groups {b['space_groups_present']}.")
    lines += ["", "Restricted sampling (no retraining), predicted E_form:", "",
              "| experiment | FE-trained median / p95 | untrained median / p95 | inside restriction (trained) | distinct (formula, SG) trained | SMACT / pyxtal / lattice (trained) | best five (trained) |",
              "|---|---|---|---|---|---|---|"]
    for label, row in r["restricted"].items():
        t, u = row["FE-trained"], row["untrained"]
        lines.append(f"| {label} | {t['fe_median']} / {t['fe_p95']} | {u['fe_median']} / {u['fe_p95']} | "
                     f"{_pct(t['share_inside_restriction'])} | {t['distinct_formula_space_group']} | "
                     f"{_pct(t['valid_smact'])} / {_pct(t['valid_pyxtal'])} / {_pct(t['valid_lattice'])} | {', '.join(t['top5'])} |")
    return "\n".join(lines) + "\n"


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())
