"""Campaign plots (matplotlib, Agg backend): property distributions per round, best value so far
against oracle calls, energies above the reference hull per round, the reference hull of a binary
system with the campaign's points, and a picture of one structure. Each function writes a PNG and returns its path; none needs a display."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _save(plt: Any, fig: Any, out: Path, *, dpi: int = 100) -> Path:
    """Lay out, write ``out`` (PNG) and release the figure."""
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def property_distributions(values_by_round: Mapping[int, Sequence[float]], *, target: str, out: Path) -> Path:
    """Histogram (step) of the oracle values of ``target`` in each round's batch."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    finite = [v for vs in values_by_round.values() for v in vs if np.isfinite(v)]
    bins = np.linspace(min(finite), max(finite), 15) if len(finite) > 1 and min(finite) < max(finite) else 10
    for r, vs in sorted(values_by_round.items()):
        clean = [v for v in vs if np.isfinite(v)]
        if clean:
            ax.hist(clean, bins=bins, histtype="step", linewidth=1.5, label=f"round {r}")
    ax.set_xlabel(target)
    ax.set_ylabel("candidates")
    ax.set_title(f"{target} of the oracle batches")
    if values_by_round:
        ax.legend()
    return _save(plt, fig, out)


def best_so_far(values: Sequence[float], *, target: str, maximize: bool, out: Path) -> Path:
    """Best oracle value so far (y) against the number of oracle calls (x), values in call order."""
    plt = _pyplot()
    arr = np.array([v if np.isfinite(v) else np.nan for v in values], dtype=float)
    filled = np.where(np.isnan(arr), -np.inf if maximize else np.inf, arr)
    best = np.maximum.accumulate(filled) if maximize else np.minimum.accumulate(filled)
    best = np.where(np.isfinite(best), best, np.nan)
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(1, len(arr) + 1)
    ax.scatter(x, arr, s=12, alpha=0.5, label="oracle value")
    ax.step(x, best, where="post", color="C1", label="best so far")
    ax.set_xlabel("oracle calls")
    ax.set_ylabel(target)
    ax.legend()
    return _save(plt, fig, out)


def e_above_hull_by_round(values_by_round: Mapping[int, Sequence[float]], *, reference: str, stable_at_most: float,
                          out: Path) -> Path:
    """Histogram per round of the energies above the reference hull (eV/atom, signed): 0 is the reference
    hull, left of it a phase below the reference (new stable), the dashed line the stability bound."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    finite = [min(max(v, -0.5), 1.5) for vs in values_by_round.values() for v in vs if np.isfinite(v)]
    lo, hi = (min([*finite, -0.05]), max([*finite, stable_at_most + 0.05])) if finite else (-0.1, 1.0)
    bins = np.linspace(lo, hi, 31)
    for r, vs in sorted(values_by_round.items()):
        clean = [min(max(v, -0.5), 1.5) for v in vs if np.isfinite(v)]
        if clean:
            ax.hist(clean, bins=bins, histtype="step", linewidth=1.8, label=f"round {r} ({len(clean)})")
    ax.axvline(0.0, color="black", linewidth=1.2, label=f"{reference} hull")
    ax.axvline(stable_at_most, color="black", linestyle="--", linewidth=1, label=f"stable ≤ {stable_at_most:g}")
    ax.set_xlabel(f"energy above the {reference} hull (eV/atom; clipped to [-0.5, 1.5])")
    ax.set_ylabel("relaxed candidates")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Oracle batches against the reference hull")
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3)
    return _save(plt, fig, out, dpi=110)


def binary_hull(elements: tuple[str, str], *, hull_line: Sequence[tuple[float, float]],
                reference_points: Sequence[tuple[float, float]],
                points_by_round: Mapping[int, Sequence[tuple[float, float]]], reference: str, out: Path) -> Path:
    """Formation energy (eV/atom) against the fraction of ``elements[1]``: the reference phases (grey), the
    reference convex hull (black line) and the campaign's relaxed candidates coloured by round."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    if reference_points:
        rx, ry = zip(*reference_points, strict=True)
        ax.scatter(rx, ry, s=18, color="0.65", label=f"{reference} phases", zorder=1)
    hx, hy = zip(*sorted(hull_line), strict=True)
    ax.plot(hx, hy, color="black", linewidth=1.5, marker="o", markersize=4, label=f"{reference} hull", zorder=2)
    for r, pts in sorted(points_by_round.items()):
        if pts:
            px, py = zip(*pts, strict=True)
            ax.scatter(px, py, s=40, marker="D", edgecolor="black", linewidth=0.5, alpha=0.8, label=f"round {r}",
                       zorder=3)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(f"atomic fraction of {elements[1]} (0 = {elements[0]}, 1 = {elements[1]})")
    ax.set_ylabel("formation energy (eV/atom)")
    ax.set_title(f"{elements[0]}–{elements[1]}: campaign candidates and the {reference} hull")
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3)
    return _save(plt, fig, out, dpi=110)


def structure(cif: str, *, title: str, out: Path) -> Path:
    """A picture of the conventional cell of a CIF (three views, atoms coloured by element)."""
    import io
    import warnings

    from ase.io import read
    from ase.visualize.plot import plot_atoms

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atoms = read(io.StringIO(cif), format="cif", index=0)
    assert not isinstance(atoms, list)
    plt = _pyplot()
    symbols = sorted(set(atoms.get_chemical_symbols()))
    palette = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(symbols)}  # distinct, unlike Jmol's greens
    colors = [palette[s] for s in atoms.get_chemical_symbols()]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.8))
    for ax, (rotation, label) in zip(axes, (("0x,0y,0z", "along c"), ("-90x,0y,0z", "along b"),
                                           ("10x,-30y,0z", "tilted")), strict=True):
        plot_atoms(atoms, ax, rotation=rotation, radii=0.45, colors=colors, show_unit_cell=2)
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    handles = [plt.Line2D([], [], marker="o", linestyle="", markersize=9, markeredgecolor="black",
                          color=palette[s], label=s) for s in symbols]
    fig.legend(handles=handles, loc="lower center", ncol=len(symbols), fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
