"""Campaign plots (matplotlib, Agg backend): property distributions per round, best value so far
against oracle calls, and the convex hull of one chemical system. Each function writes a PNG and
returns its path; none needs a display."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _save(plt: Any, fig: Any, out: Path) -> Path:
    """Lay out, write ``out`` (PNG, 100 dpi) and release the figure."""
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
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


def hull(entries: Sequence[tuple[Mapping[str, float], float]], *, elements: Sequence[str], out: Path) -> Path | None:
    """Convex hull of one chemical system from (composition, formation energy per atom) pairs; the
    pure elements are added at 0 eV/atom. Returns None when there is nothing above the elements."""
    from pymatgen.analysis.phase_diagram import PDEntry, PDPlotter, PhaseDiagram
    from pymatgen.core import Composition

    pd_entries = [PDEntry(Composition({el: 1}), 0.0) for el in elements]
    for comp, e_form in entries:
        c = Composition(dict(comp))
        if np.isfinite(e_form) and set(map(str, c.elements)) <= set(elements):
            pd_entries.append(PDEntry(c, float(e_form) * c.num_atoms))
    if len(pd_entries) <= len(elements):
        return None
    plt = _pyplot()
    diagram = PhaseDiagram(pd_entries)
    plotter = PDPlotter(diagram, backend="matplotlib", show_unstable=0.5)
    plotter.get_plot()
    fig = plt.gcf()
    fig.set_size_inches(8, 6)
    return _save(plt, fig, out)
