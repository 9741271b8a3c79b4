"""Per-run metrics of one strategy and seed: unique hits, S.U.N. labels, rates per round and per source,
and the proxy's error on each batch before labelling."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from discovery.crystal import Crystal
from discovery.selection import unique_structures
from discovery.sun import is_hit
from orchestration.bench_discovery.settings import HIT_THRESHOLDS, Evaluated

if TYPE_CHECKING:
    from discovery.sun import SunLabels


def unique_hit_flags(evaluated: Sequence[Evaluated], threshold: float) -> list[bool]:
    """Per call: True when it is a hit (ok, E_hull ≤ threshold) not matching an earlier hit (StructureMatcher)."""
    from pymatgen.core import Structure

    hits = [i for i, e in enumerate(evaluated) if is_hit(e.status, e.e_above_hull, at_most=threshold)]
    flags = [False] * len(evaluated)
    with_cif = [i for i in hits if evaluated[i].relaxed_cif]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = [Structure.from_str(evaluated[i].relaxed_cif or "", fmt="cif") for i in with_cif]
        keep = unique_structures(structures)
    for k in keep:
        flags[with_cif[k]] = True
    for i in hits:
        if not evaluated[i].relaxed_cif:
            flags[i] = True
    return flags


def covered(crystal: Crystal, reference: str = "mp20+matbench") -> bool:
    """True when the hull reference holds at least one compound in the crystal's chemical system (or a
    subsystem), i.e. its E_hull is measured against more than the elements alone. In a system the
    reference does not cover, any negative formation energy counts as "on the hull"."""
    from oracles.reference import load_reference

    elements = frozenset(crystal.counts)
    if (reference, elements) not in _COVERED:
        entries = load_reference(reference).system_entries(elements)  # type: ignore[arg-type]
        _COVERED[reference, elements] = any(len(e.composition.elements) > 1 for e in entries)
    return _COVERED[reference, elements]


_COVERED: dict[tuple[str, frozenset[str]], bool] = {}


def known_formula(crystal: Crystal, reference: str = "mp20+matbench") -> bool:
    """True when the hull reference already holds a phase of the crystal's reduced formula: a hit there is a
    rediscovered (or new polymorph of a) known compound rather than a new composition."""
    from orchestration.campaign.sun import reference_formulas

    return crystal.reduced_formula() in reference_formulas(reference)


def sun_labels(evaluated: Sequence[Evaluated], reference: str = "mp20+matbench") -> list[SunLabels]:
    """S.U.N. labels of one strategy run (:class:`discovery.sun.SunLabeler`), labelled like a campaign's
    results (E_hull ≤ 0.1 eV/atom, 0-D packings excluded) in call order: known formulas are the reference's,
    known structures the shipped MP-20 and Li-Fe-O ones, uniqueness and novelty within the run."""
    from discovery.datasets.reference_structures import load_reference_structures
    from discovery.sun import SunInput, SunLabeler
    from orchestration.campaign.sun import parse_cif, reference_formulas

    labeler = SunLabeler(known_formulas=reference_formulas(reference), reference=load_reference_structures())
    return [labeler.label(SunInput(str(i), 0, e.status, None if math.isnan(e.e_above_hull) else e.e_above_hull,
                                   parse_cif(e.relaxed_cif), e.crystal.space_group))
            for i, e in enumerate(evaluated)]


def sun_counts(evaluated: Sequence[Evaluated], reference: str = "mp20+matbench") -> dict[str, int]:
    """S.U.N. counts of one strategy run (:func:`discovery.sun.count` of :func:`sun_labels`)."""
    from discovery.sun import count

    return count(sun_labels(evaluated, reference)).as_dict()


def counts_by(keys: Sequence[int | str], flags: Sequence[bool]) -> dict[str, list[int]]:
    """``{str(key): [flagged calls, calls]}`` over calls grouped by ``keys`` (e.g. round or source), keys sorted."""
    if len(keys) != len(flags):
        raise ValueError(f"{len(keys)} keys but {len(flags)} flags")
    out: dict[str, list[int]] = {}
    order = sorted(set(keys), key=lambda k: (isinstance(k, str), k))
    for k in order:
        out[str(k)] = [0, 0]
    for k, f in zip(keys, flags, strict=True):
        row = out[str(k)]
        row[0] += bool(f)
        row[1] += 1
    return out


def proxy_error_by_round(evaluated: Sequence[Evaluated], *, by_source: bool = False
                         ) -> dict[str, dict[str, float | int]]:
    """Per round: the proxy's mean absolute error (eV/atom) on the batch before labelling, i.e. its predicted
    formation energy against the oracle's, over converged calls with both (``n``); rounds without any omitted.
    ``by_source``: per round and candidate source, keyed ``"<round>:<source>"`` (a batch that shifts towards the
    source the proxy predicts better lowers the pooled error without the proxy learning anything)."""
    errors: dict[tuple[int, str], list[float]] = {}
    for e in evaluated:
        if e.status == "ok" and math.isfinite(e.predicted) and math.isfinite(e.formation_energy):
            key = (e.round, e.source if by_source else "")
            errors.setdefault(key, []).append(abs(e.predicted - e.formation_energy))
    return {(f"{r}:{s}" if by_source else str(r)): {"mae": round(float(np.mean(v)), 4), "n": len(v)}
            for (r, s), v in sorted(errors.items())}


def sun_metrics(evaluated: Sequence[Evaluated], flags: Sequence[bool], zero_dimensional: Sequence[bool]
                ) -> dict[str, Any]:
    """What the S.U.N. report needs of one run, from its per-call S.U.N. ``flags`` and 0-D-hit flags (stable,
    converged, a packing of molecules: reported, never S.U.N.): counts, distinct S.U.N. formulas, the
    cumulative curve, counts per round and per source, and the proxy's error per round."""
    if not len(evaluated) == len(flags) == len(zero_dimensional):
        raise ValueError("one flag per evaluated call")
    formulas = sorted({e.crystal.reduced_formula() for e, f in zip(evaluated, flags, strict=True) if f})
    return {
        "sun_hits": int(sum(flags)),
        "sun_formulas": formulas,
        "zero_dimensional_hits": int(sum(zero_dimensional)),
        "zero_dimensional_formulas": sorted({e.crystal.reduced_formula()
                                             for e, z in zip(evaluated, zero_dimensional, strict=True) if z}),
        "cumulative_sun": np.cumsum(np.asarray(flags, dtype=int)).astype(int).tolist(),
        "sun_by_round": counts_by([e.round for e in evaluated], flags),
        "sun_by_source": counts_by([e.source for e in evaluated], flags),
        "proxy_error_by_round": proxy_error_by_round(evaluated),
        "proxy_error_by_round_and_source": proxy_error_by_round(evaluated, by_source=True),
    }


def strategy_metrics(evaluated: Sequence[Evaluated], reference: str = "mp20+matbench") -> dict[str, Any]:
    """Counts, unique hits (both thresholds), curves and the diversity of the unique hits of one run."""
    out: dict[str, Any] = {"oracle_calls": len(evaluated), "ok": sum(e.status == "ok" for e in evaluated)}
    for t in HIT_THRESHOLDS:
        flags = unique_hit_flags(evaluated, t)
        key = _tkey(t)
        out[f"hits_{key}"] = sum(is_hit(e.status, e.e_above_hull, at_most=t) for e in evaluated)
        out[f"unique_hits_{key}"] = sum(flags)
        out[f"cumulative_unique_hits_{key}"] = np.cumsum(flags).astype(int).tolist()
        if t == HIT_THRESHOLDS[0]:
            hits = [e.crystal for e, f in zip(evaluated, flags, strict=True) if f]
            out["unique_hits_ehull_le_0p1_covered"] = sum(covered(c, reference) for c in hits)
            out["unique_hits_ehull_le_0p1_new_composition"] = sum(not known_formula(c, reference) for c in hits)
            out["hit_formulas"] = sorted({c.reduced_formula() for c in hits})
            out["diversity"] = {
                "distinct_formulas": len({c.reduced_formula() for c in hits}),
                "distinct_chemical_systems": len({"-".join(sorted(c.counts)) for c in hits}),
                "distinct_elements": len({el for c in hits for el in c.counts}),
                "distinct_space_groups": len({c.space_group for c in hits}),
            }
    e = np.array([x.e_above_hull if x.status == "ok" else np.nan for x in evaluated])
    best = np.fmin.accumulate(np.where(np.isnan(e), np.inf, e)) if len(e) else e
    out["best_e_above_hull_so_far"] = [None if not np.isfinite(b) else round(float(b), 4) for b in best]
    fe = np.array([x.formation_energy if x.status == "ok" else np.nan for x in evaluated])
    out["median_formation_energy"] = float(np.nanmedian(fe)) if np.isfinite(fe).any() else None
    from discovery.sun import count

    labels = sun_labels(evaluated, reference)
    out["sun"] = count(labels).as_dict()
    out |= sun_metrics(evaluated, [x.converged and x.sun for x in labels],
                       [x.converged and x.stable and x.dimensionality == 0 for x in labels])
    return out


def _tkey(t: float) -> str:
    return "ehull_le_" + (f"{t:g}".replace(".", "p").replace("-", "m"))
