"""Physical check of a trained Crystal-GFN: are its samples real crystals?

A proxy's number about generated crystals is only worth something beside a physical check. This
samples N crystals from a checkpoint and reports

* the volume per atom (Å³/atom) against MP-20 train's 1st–99th percentile range, the share of
  samples with a lattice length above 30 Å, and the proxy's median prediction;
* SMACT, Wyckoff (pyxtal) and lattice-system validity;
* for ``n_relax`` random samples: decoding (:class:`CheckDecoding`: the decoder, best-of-k selection by
  CHGNet single-point energy, the cell at the row's or the volume model's volume; see
  :mod:`oracles.decode`) and a CHGNet relaxation (the campaign's oracle, fmax 0.1 eV/Å, ≤ 200 steps by
  default) — status counts, share ``ok``, median |proxy FE − CHGNet FE| and median CHGNet E_hull against
  the dense reference. The result names the decoding used.

    matloop gfn check --checkpoint discovery/data/checkpoints/crystal-gfn-fe \\
        --proxy discovery/data/checkpoints/proxy-fe -n 2000 --relax 64 --out runs/gfn-check
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from discovery.crystal import Crystal
from discovery.sun import SunLabels, count
from oracles.decode import DecoderName, VolumeChoice

if TYPE_CHECKING:
    from oracles.base import OracleResult


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckDecoding:
    """How the relaxation check turns sampled rows into structures (the oracle's decoding settings).

    decoder: ``"pyxtal"`` (random Wyckoff placement in the row's lattice) or ``"score"`` (the score decoder);
    best_of: decodings per row, the lowest CHGNet single-point energy per atom is relaxed (1: the first);
    volume: ``"row"``: the sampled cell's volume; ``"model"``: the cell rescaled to the volume model's V₀;
    rattle: Å each decoded atom is moved in a random direction before relaxing (0: none)."""

    decoder: DecoderName = "pyxtal"
    best_of: int = 1
    volume: VolumeChoice = "row"
    rattle: float = 0.0

    def __post_init__(self) -> None:
        from typing import get_args

        if self.decoder not in get_args(DecoderName):
            raise ValueError(f"decoder: {self.decoder!r} is not one of {', '.join(get_args(DecoderName))}")
        if self.volume not in get_args(VolumeChoice):
            raise ValueError(f"volume: {self.volume!r} is not one of {', '.join(get_args(VolumeChoice))}")
        if self.best_of < 1:
            raise ValueError(f"best_of: must be at least 1 (got {self.best_of})")
        if not 0.0 <= self.rattle <= 0.5:
            raise ValueError(f"rattle: must be in [0, 0.5] Å (got {self.rattle})")

    def oracle_settings(self) -> dict[str, Any]:
        """The CHGNet oracle's settings for this decoding (:class:`oracles.decode.DecodingFields`)."""
        return {"decoder": {"name": self.decoder}, "decode_best_of": self.best_of, "decode_volume": self.volume,
                "decode_rattle": self.rattle}


def mp20_volume_range(*, lo_pct: float = 1.0, hi_pct: float = 99.0) -> tuple[float, float]:
    """MP-20 train's volume per atom (Å³/atom) at the two percentiles (9.07 and 52.5 for 1 and 99)."""
    from discovery.datasets import load_mp20
    from discovery.proxy.lattice import volumes_per_atom

    v = volumes_per_atom(load_mp20("train").data.crystals)
    return float(np.percentile(v, lo_pct)), float(np.percentile(v, hi_pct))


def volume_metrics(crystals: Sequence[Crystal], *, vrange: tuple[float, float]) -> dict[str, float]:
    """Volume-per-atom summary of ``crystals`` against ``vrange`` (Å³/atom)."""
    from discovery.proxy.lattice import volumes_per_atom

    v = volumes_per_atom(crystals)
    lengths = np.array([c.lattice[:3] for c in crystals], dtype=float)
    return {
        "n": len(crystals), "volume_per_atom_median": float(np.nanmedian(v)),
        "volume_per_atom_p5": float(np.nanpercentile(v, 5)), "volume_per_atom_p95": float(np.nanpercentile(v, 95)),
        "share_inside_mp20_range": float(np.mean((v >= vrange[0]) & (v <= vrange[1]))),
        "share_above_mp20_max": float(np.mean(v > vrange[1])), "mp20_range": list(vrange),  # type: ignore[dict-item]
        "share_length_above_30A": float(np.mean(lengths.max(axis=1) > 30.0)),
    }


def diversity_metrics(crystals: Sequence[Crystal]) -> dict[str, Any]:
    """Distinct reduced formulas, the most sampled one and its share, and the median atoms per conventional cell
    (a sampler collapsed onto one compound shows here first)."""
    from collections import Counter

    from pymatgen.core import Composition

    formulas = Counter(Composition(c.counts).reduced_formula for c in crystals)
    top, k = formulas.most_common(1)[0] if formulas else ("", 0)
    return {"distinct_reduced_formulas": len(formulas), "top_formula": top,
            "top_formula_share": k / max(1, len(crystals)),
            "median_atoms": float(np.median([c.n_atoms for c in crystals])) if crystals else float("nan")}


def relaxation_check(crystals: Sequence[Crystal], predicted_fe: np.ndarray, *, workers: int = 2, fmax: float = 0.1,
                     steps: int = 200, reference: str = "mp20+matbench", seed: int = 0,
                     decoding: CheckDecoding | None = None, engine: Literal["ase", "batched"] | None = None,
                     cell_filter: Literal["unit", "frechet"] | None = None,
                     optimizer: Literal["FIRE", "BFGS"] | None = None,
                     timeout_s: float = 300.0, progress: Callable[[int, int], None] | None = None,
                     ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Decode (``decoding``) and relax ``crystals`` with the CHGNet oracle; summary and one row per crystal.

    ``engine``: the CHGNet oracle's relaxation engine (``None``: its default); ``cell_filter``: its cell filter
    (``"unit"``: ASE's ``UnitCellFilter``, ``"frechet"``: ``FrechetCellFilter``, CHGNet's own relaxer's choice;
    ``None``: the oracle's default); ``optimizer``: its optimizer (``"BFGS"`` runs on the ASE engine unless ``engine`` is
    ``"batched"``; ``None``: the oracle's default, FIRE); ``timeout_s``: its wall-time limit per structure (decode + relax), s."""
    from oracles.base import Candidate
    from oracles.registry import get_oracle

    decoding = decoding or CheckDecoding()
    chosen: dict[str, Any] = {} if engine is None else {"engine": engine}
    if cell_filter is not None:
        chosen["cell_filter"] = cell_filter
    if optimizer is not None:
        chosen["optimizer"] = optimizer
    oracle = get_oracle("chgnet", fmax=fmax, steps=steps, workers=workers, reference=reference, timeout_s=timeout_s,
                        **chosen, **decoding.oracle_settings())
    engine = getattr(getattr(oracle, "settings", None), "engine", engine)
    cell_filter = getattr(getattr(oracle, "settings", None), "cell_filter", cell_filter)
    optimizer = getattr(getattr(oracle, "settings", None), "optimizer", optimizer)
    t0 = time.perf_counter()
    try:
        results = oracle.evaluate([Candidate.from_crystal(c, id=c.id or f"s{i}") for i, c in enumerate(crystals)],
                                  seed=seed, progress=progress)
    finally:
        close = getattr(oracle, "close", None)
        if close is not None:
            close()
    labels = sun_labels_of(results, crystals, reference=reference)
    rows: list[dict[str, Any]] = []
    for c, r, p, lab in zip(crystals, results, predicted_fe, labels, strict=True):
        rows.append({"id": r.candidate_id, "formula": c.formula, "space_group": c.space_group, "status": r.status,
                     "n_atoms": c.n_atoms, "n_elements": len(c.counts), "n_steps": r.n_steps, "proxy_fe": float(p),
                     "chgnet_fe": r.targets.get("formation_energy_per_atom"),
                     "e_above_hull": r.targets.get("e_above_hull"), "message": r.message[:200],
                     **{k: v for k, v in lab.as_dict().items() if k != "candidate_id"}})
    ok = [row for row in rows if row["status"] == "ok" and row["chgnet_fe"] is not None]
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    err = np.array([abs(row["proxy_fe"] - row["chgnet_fe"]) for row in ok])
    ehull = np.array([row["e_above_hull"] for row in ok if row["e_above_hull"] is not None])
    summary = {
        "n_relaxed": len(rows), "statuses": statuses, "share_ok": len(ok) / max(len(rows), 1),
        "median_abs_proxy_minus_chgnet_fe": float(np.median(err)) if len(err) else None,
        "median_chgnet_minus_proxy_fe": float(np.median([r["chgnet_fe"] - r["proxy_fe"] for r in ok])) if ok else None,
        "median_chgnet_e_above_hull": float(np.median(ehull)) if len(ehull) else None,
        "share_ok_with_e_above_hull_le_0.1": float(np.mean(ehull <= 0.1)) if len(ehull) else None,
        "median_steps_ok": float(np.median([r["n_steps"] for r in ok])) if ok else None,
        "median_atoms": float(np.median([c.n_atoms for c in crystals])) if crystals else None,
        "sun_counts": count(labels).as_dict(),
        "reference": reference, "fmax": fmax, "steps": steps, "decoding": asdict(decoding), "engine": engine,
        "cell_filter": cell_filter, "optimizer": optimizer,
        "timeout_s": timeout_s, "seconds": round(time.perf_counter() - t0, 1),
    }
    return summary, rows


def sun_labels_of(results: Sequence[OracleResult], crystals: Sequence[Crystal], *,
                  reference: str = "mp20+matbench") -> list[SunLabels]:
    """S.U.N. labels (:mod:`discovery.sun`, defaults: E_hull ≤ 0.1 eV/atom, 0-D packings excluded) of relaxed
    samples in the given order: known formulas are the hull reference's, known structures the shipped MP-20
    and Li-Fe-O ones, uniqueness among the samples themselves."""
    from discovery.datasets.reference_structures import load_reference_structures
    from discovery.sun import SunInput, SunLabeler
    from orchestration.campaign.sun import parse_cif, reference_formulas

    labeler = SunLabeler(known_formulas=reference_formulas(reference), reference=load_reference_structures())
    return [labeler.label(SunInput(r.candidate_id, 0, r.status, r.targets.get("e_above_hull"),
                                   parse_cif(r.structure_cif), c.space_group))
            for r, c in zip(results, crystals, strict=True)]


def reward_volume_fit(gfn: Any, checkpoint: Path, proxy: Any, crystals: Sequence[Crystal], *,
                      vrange: tuple[float, float]) -> dict[str, Any]:
    """:func:`discovery.gfn.volume_fit.volume_fit` of ``crystals`` under the reward ``checkpoint`` was trained on
    (rebuilt from its ``train_report.json`` on the loaded ``proxy`` model), against ``vrange`` (Å³/atom);
    ``{"skipped": why}`` when that reward cannot be rebuilt (not a proxy reward, no report)."""
    from discovery.gfn.volume_fit import volume_fit
    from discovery.proxy.lattice import default_lattice_prior
    from orchestration.cli_gfn import proxy_training_reward

    report = checkpoint / "train_report.json"
    info = json.loads(report.read_text()) if report.exists() else {}
    if info.get("reward") != "proxy":
        return {"skipped": f"{report} names no proxy reward ({info.get('reward')!r}); the reward cannot be rebuilt"}
    # reports from before a setting was recorded: the defaults `gfn train` had then
    settings = {"transform": "boltzmann", "temperature": 0.125, "maximize": False, "volume_prior": 0.0, **info}
    reward = proxy_training_reward(proxy, settings)
    fit = volume_fit(crystals, reward, ln_v0=default_lattice_prior().volume.predict(crystals), vrange=vrange,
                     length_range=tuple(gfn.space.length_range))
    return {**fit.as_dict(), "volume_prior": float(settings["volume_prior"]), "transform": settings["transform"]}


def run_check(*, checkpoint: Path, proxy: Path, n: int = 2000, n_relax: int = 64, seed: int = 0, workers: int = 2,
              reference: str = "mp20+matbench", out: Path | None = None, decoding: CheckDecoding | None = None,
              engine: Literal["ase", "batched"] | None = None, cell_filter: Literal["unit", "frechet"] | None = None,
              optimizer: Literal["FIRE", "BFGS"] | None = None, volume_profile: int = 0,
              timeout_s: float = 300.0, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Sample ``n`` crystals from ``checkpoint``; volume, validity and proxy metrics; decode (``decoding``) and
    relax ``n_relax`` of them (``engine``, ``cell_filter``, ``optimizer``, ``timeout_s``: see
    :func:`relaxation_check`). ``volume_profile`` > 0: the first that many samples' volumes against the volume
    distribution their training reward implies (:func:`reward_volume_fit`)."""
    from discovery.gfn import CrystalGFN
    from discovery.proxy import EnsembleProxy
    from orchestration.reproduce import predict, validity

    say = progress or (lambda _msg: None)
    gfn = CrystalGFN.load(checkpoint)
    prx = EnsembleProxy.load(proxy)
    say(f"sampling {n} crystals")
    sampled = gfn.sample(n, seed=seed)
    crystals = [Crystal(c.space_group, c.counts, *c.lattice, id=f"s{i:05d}") for i, c in enumerate(sampled)]
    fe = predict(prx, crystals)
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "proxy": str(proxy), "seed": seed}
    vrange = mp20_volume_range()
    result["volume"] = volume_metrics(crystals, vrange=vrange)
    result["diversity"] = diversity_metrics(crystals)
    if volume_profile > 0:
        say(f"reward-implied volumes of {min(volume_profile, n)} samples")
        result["volume_fit"] = reward_volume_fit(gfn, checkpoint, prx, crystals[:volume_profile], vrange=vrange)
    result["predicted_fe_median"] = float(np.median(fe))  # the proxy's first target (see proxy_target)
    result["proxy_target"] = str(prx.target_names[0])
    result["predicted_median"] = result["predicted_fe_median"]  # the same value, named for any proxy target
    result["paper_predicted_fe_median"] = -3.2
    say("validity (SMACT, pyxtal, lattice)")
    result["validity"] = validity(crystals, pyxtal_max=min(n, 200), seed=seed)
    if n_relax > 0:
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(crystals), size=min(n_relax, len(crystals)), replace=False))
        say(f"decoding and relaxing {len(pick)} samples with CHGNet")
        summary, rows = relaxation_check([crystals[i] for i in pick], fe[pick], workers=workers,
                                         reference=reference, seed=seed, decoding=decoding, engine=engine,
                                         cell_filter=cell_filter, optimizer=optimizer, timeout_s=timeout_s)
        result["relaxation"] = summary
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "relaxations.json").write_text(json.dumps(rows, indent=1))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        from discovery.proxy.lattice import volumes_per_atom

        np.save(out / "volume_per_atom.npy", volumes_per_atom(crystals))
        (out / "check.json").write_text(json.dumps(result, indent=1))
    return result
