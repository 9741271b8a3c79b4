"""Decoder evaluation (issue 16): score-based decoder vs pyxtal random placement (``matloop bench decoder``).

Crystals: the first ``n`` MP-20 validation crystals with ≤ ``max_atoms`` atoms in the conventional cell
(``discovery/data/mp20/mp20_val.csv.gz``); their true structures come from ``mp20_val_cif.csv.gz``. Each
decoder gets only the space group and the composition, plus the lattice as set by ``lattice``:

* ``"hint"``: the true lattice of the row. pyxtal places the atoms inside it; the score decoder starts its
  lattice chain from it and refines it (``use_lattice_hint=True``).
* ``"free"``: no lattice. pyxtal draws one itself (``pyxtal.from_random`` without a lattice: its own
  volume estimate from the species) and the atoms are then placed in it by :func:`oracles.decode.decode_crystal`;
  the score decoder samples it from its learned prior (``use_lattice_hint=False``).

For each crystal, ``k`` decodings per decoder (seeds ``candidate_seed(seed) + j``, j < k), each through
:func:`oracles.decode.decode_crystal` (the oracles' code path: distance check and rescaling included),
then the same CHGNet relaxation for both decoders (the CHGNet oracle, ``engine="batched"`` in this process,
``steps`` and ``fmax`` as given, E_hull against the oracle's default reference).

Metrics per decoder (all with percentile bootstrap CIs over crystals, ``bootstrap`` resamples):

* ``recovery_relaxed`` / ``recovery_unrelaxed``: share of crystals for which at least one of the k
  relaxed (unrelaxed) structures matches the true structure (pymatgen ``StructureMatcher`` defaults:
  ltol 0.2, stol 0.3, angle_tol 5°, primitive cells, volume scaled);
* ``median_steps``: median optimizer steps over all relaxations; ``share_converged``: share of
  relaxations with status ``ok`` (forces below fmax within the step cap);
* ``median_e_hull``: median E_hull (eV/atom) over relaxations with a finite value, and
  ``median_best_e_hull``: median over crystals of the lowest E_hull of its k;
* paired ratios score/pyxtal (recovery) and differences (steps, converged), bootstrapped over the same
  resampled crystals.

Coverage (CDVAE's COV-R / COV-P, Xie et al. 2022): per structure the mean over sites of matminer's
``CrystalNNFingerprint`` ("ops" preset) and matminer's Magpie ``ElementProperty`` of the composition
(normalised with the reference set's mean and standard deviation); COV-R = share of reference structures
whose nearest sample is within 0.4 (structure) and 10 (composition) Euclidean distance, each minimised
separately as in CDVAE; COV-P = the same from samples to references. References: all MP-20 validation
crystals and, separately, the ``n`` benchmark crystals. Needs matminer (not a project dependency); without it
the report says so.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pymatgen.core import Structure

from discovery.crystal import Crystal, crystals_from_frame
from oracles.base import Candidate, OracleResult
from oracles.decode import Decoded, DecodeError, DecoderName, DecodeSettings, decode_batch, score_decoder

MP20 = Path(__file__).resolve().parent.parent / "discovery" / "data" / "mp20"
LatticeMode = Literal["hint", "free"]
Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``."""
COV_CUTOFFS = {"struct": 0.4, "comp": 10.0}  # CDVAE's MP-20 cutoffs


@dataclass(frozen=True, slots=True, kw_only=True)
class DecoderBench:
    """Settings of one evaluation (see the module docstring)."""

    n: int = 50
    k: int = 8
    max_atoms: int = 12
    decoders: tuple[DecoderName, ...] = ("pyxtal", "score")
    lattice: LatticeMode = "hint"
    relax: bool = True
    steps: int = 100
    fmax: float = 0.1
    seed: int = 0
    checkpoint: str | None = None
    coverage: bool = True
    coverage_samples: int = 100
    bootstrap: int = 1000
    mp20_dir: str | None = None


@dataclass(slots=True)
class Sample:
    """One decoding (and its relaxation): ``structure`` is None when decoding failed (``error``)."""

    crystal_id: str
    j: int
    structure: Structure | None
    decode_s: float
    error: str = ""
    relaxed: Structure | None = None
    status: str = ""
    n_steps: int = 0
    e_hull: float = math.nan
    match_unrelaxed: bool = False
    match_relaxed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def benchmark_crystals(n: int, *, max_atoms: int = 12, mp20: Path = MP20) -> list[tuple[Crystal, Structure]]:
    """The first ``n`` MP-20 validation crystals with ≤ ``max_atoms`` atoms, with their true structures."""
    frame = pd.read_csv(mp20 / "mp20_val.csv.gz")
    cifs = pd.read_csv(mp20 / "mp20_val_cif.csv.gz").set_index("material_id")["cif"]
    crystals = [c for c in crystals_from_frame(frame.drop(columns=["formula"], errors="ignore"))
                if c.n_atoms <= max_atoms][:n]
    if len(crystals) < n:
        raise ValueError(f"only {len(crystals)} MP-20 validation crystals have ≤ {max_atoms} atoms (asked for {n})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [(c, Structure.from_str(cifs[c.id], fmt="cif")) for c in crystals]


def _free_lattice_crystal(crystal: Crystal, seed: int) -> Crystal:
    """``crystal`` with the lattice pyxtal draws itself for this space group and composition."""
    from pyxtal import pyxtal

    species = list(crystal.counts)
    xtal = pyxtal()
    xtal.from_random(3, crystal.space_group, species, [crystal.counts[s] for s in species],
                     random_state=np.random.default_rng([seed, 7]))
    a, b, c, alpha, beta, gamma = (float(x) for x in xtal.lattice.get_para(degree=True))
    return Crystal(space_group=crystal.space_group, counts=crystal.counts, a=a, b=b, c=c, alpha=alpha, beta=beta,
                   gamma=gamma, id=crystal.id)


def decode_samples(crystals: Sequence[Crystal], *, decoder: DecoderName, lattice: LatticeMode, k: int, seed: int,
                   checkpoint: str | None = None, progress: Progress | None = None) -> list[Sample]:
    """``k`` decodings of each crystal (crystal-major order) by :func:`oracles.decode.decode_batch`.

    pyxtal with ``lattice="free"``: each sample in its own pyxtal-drawn lattice. Score decoder: the
    ``fallback`` of a crystal's first sample counts its samples that came from the decoder's random-placement
    fallback (no score) in its last decoder call."""
    settings = DecodeSettings(decoder=decoder, checkpoint=checkpoint if decoder == "score" else None,
                              use_lattice_hint=lattice == "hint")
    out: list[Sample] = []
    for i, crystal in enumerate(crystals):
        base = Candidate.from_crystal(crystal).candidate_seed(seed)
        t0 = time.perf_counter()
        if decoder == "pyxtal" and lattice == "free":
            decoded: list[Decoded | DecodeError] = []
            for j in range(k):
                try:
                    decoded += decode_batch(_free_lattice_crystal(crystal, base + j), k=1, seed=base + j,
                                            settings=settings)
                except Exception as exc:  # pyxtal found no random lattice or placement for this composition
                    decoded.append(DecodeError(f"{type(exc).__name__}: {exc}", impossible=False))
        else:
            decoded = decode_batch(crystal, k=k, seed=base, settings=settings)
        per = (time.perf_counter() - t0) / k
        fallback = int(score_decoder(checkpoint).last_stats.get("fallback", 0)) if decoder == "score" else 0
        for j, dec in enumerate(decoded):
            if isinstance(dec, DecodeError):
                out.append(Sample(crystal.id, j, None, per, error=f"{'impossible' if dec.impossible else 'failed'}: "
                                                                   f"{dec}"))
            else:
                extra: dict[str, Any] = {"volume_scale": round(dec.volume_scale, 4), "attempt": dec.attempt}
                if decoder == "score" and j == 0:
                    extra["fallback"] = fallback
                out.append(Sample(crystal.id, j, dec.structure, per, extra=extra))
        if progress is not None:
            progress(f"decode {decoder}", i + 1, len(crystals))
    return out


def relax_samples(samples: list[Sample], *, steps: int, fmax: float, mp20_dir: str | None,
                  progress: Progress | None = None, label: str = "relax") -> None:
    """Relax every decoded sample with the CHGNet oracle (batched engine, this process, one torch thread)."""
    from oracles.chgnet import CHGNetOracle

    todo = [s for s in samples if s.structure is not None]
    cands = [Candidate.from_structure(s.structure, id=f"{s.crystal_id}-{s.j}") for s in todo if s.structure]
    settings: dict[str, Any] = {"engine": "batched", "workers": 0, "threads": 1, "steps": steps, "fmax": fmax}
    if mp20_dir:
        settings["mp20_dir"] = mp20_dir
    with CHGNetOracle(**settings) as oracle:
        results: list[OracleResult] = oracle.evaluate(
            cands, seed=0, progress=(lambda d, t: progress(label, d, t)) if progress else None)
    for sample, res in zip(todo, results, strict=True):
        sample.status, sample.n_steps = res.status, int(res.n_steps)
        e_hull = (res.targets or {}).get("e_above_hull")
        sample.e_hull = math.nan if e_hull is None else float(e_hull)
        if res.status in ("ok", "unconverged") and res.structure_cif:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sample.relaxed = Structure.from_str(res.structure_cif, fmt="cif")
    for sample in samples:
        if sample.structure is None:
            sample.status = "decode_failed"


def match_samples(samples: list[Sample], truth: dict[str, Structure]) -> None:
    """Set ``match_unrelaxed``/``match_relaxed`` with pymatgen's StructureMatcher (default tolerances)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher()
    for s in samples:
        ref = truth[s.crystal_id]
        for attr, struct in (("match_unrelaxed", s.structure), ("match_relaxed", s.relaxed)):
            if struct is not None:
                try:
                    setattr(s, attr, bool(matcher.fit(ref, struct)))
                except Exception:  # a degenerate cell: no match
                    setattr(s, attr, False)


def per_crystal(samples: list[Sample], ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays over crystals (in ``ids`` order) of what the metrics need; steps/converged as per-crystal sums."""
    by: dict[str, list[Sample]] = {i: [] for i in ids}
    for s in samples:
        by[s.crystal_id].append(s)
    relaxed = [[s for s in by[i] if s.status in ("ok", "unconverged")] for i in ids]
    return {
        "rec_relaxed": np.array([any(s.match_relaxed for s in by[i]) for i in ids], float),
        "rec_unrelaxed": np.array([any(s.match_unrelaxed for s in by[i]) for i in ids], float),
        "n_relaxed": np.array([len(r) for r in relaxed], float),
        "n_converged": np.array([sum(s.status == "ok" for s in r) for r in relaxed], float),
        "best_e_hull": np.array([min((s.e_hull for s in r if math.isfinite(s.e_hull)), default=math.nan)
                                 for r in relaxed]),
        "steps": np.array([[s.n_steps for s in r] for r in relaxed], dtype=object),
        "e_hull": np.array([[s.e_hull for s in r if math.isfinite(s.e_hull)] for r in relaxed], dtype=object),
        "decoded": np.array([sum(not s.error for s in by[i]) for i in ids], float),
        "fallback": np.array([sum(int(s.extra.get("fallback", 0)) for s in by[i]) for i in ids], float),
        "samples": np.array([len(by[i]) for i in ids], float),
    }


def _metrics(pc: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, float]:
    steps = np.concatenate([np.asarray(pc["steps"][i], float) for i in idx]) if len(idx) else np.array([])
    ehull = np.concatenate([np.asarray(pc["e_hull"][i], float) for i in idx]) if len(idx) else np.array([])
    n_rel = float(pc["n_relaxed"][idx].sum())
    best = pc["best_e_hull"][idx]
    return {
        "recovery_relaxed": float(pc["rec_relaxed"][idx].mean()),
        "recovery_unrelaxed": float(pc["rec_unrelaxed"][idx].mean()),
        "median_steps": float(np.median(steps)) if steps.size else math.nan,
        "share_converged": float(pc["n_converged"][idx].sum() / n_rel) if n_rel else math.nan,
        "median_e_hull": float(np.median(ehull)) if ehull.size else math.nan,
        "median_best_e_hull": float(np.nanmedian(best)) if np.isfinite(best).any() else math.nan,
    }


def _ci(values: list[float]) -> list[float]:
    arr = np.array([v for v in values if math.isfinite(v)])
    if not arr.size:
        return [math.nan, math.nan]
    return [round(float(np.percentile(arr, 2.5)), 4), round(float(np.percentile(arr, 97.5)), 4)]


def summarize(per_decoder: dict[str, dict[str, np.ndarray]], *, bootstrap: int, seed: int) -> dict[str, Any]:
    """Point estimates, percentile bootstrap CIs over crystals (paired across decoders), and the goals."""
    names = list(per_decoder)
    n = len(next(iter(per_decoder.values()))["rec_relaxed"])
    full = np.arange(n)
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, n, n) for _ in range(bootstrap)]
    out: dict[str, Any] = {}
    boot: dict[str, list[dict[str, float]]] = {}
    for name in names:
        point = _metrics(per_decoder[name], full)
        boot[name] = [_metrics(per_decoder[name], d) for d in draws]
        out[name] = {key: {"value": round(val, 4), "ci95": _ci([b[key] for b in boot[name]])}
                     for key, val in point.items()}
        pc = per_decoder[name]
        out[name]["decoded_share"] = round(float(pc["decoded"].sum() / max(pc["samples"].sum(), 1.0)), 4)
        out[name]["fallback_share"] = round(float(pc["fallback"].sum() / max(pc["decoded"].sum(), 1.0)), 4)
    if {"pyxtal", "score"} <= set(names):
        comp: dict[str, Any] = {}
        for key, kind in (("recovery_relaxed", "ratio"), ("recovery_unrelaxed", "ratio"), ("median_steps", "diff"),
                          ("share_converged", "diff"), ("median_e_hull", "diff")):
            def rel(s: float, p: float, kind: str = kind) -> float:
                if kind == "diff":
                    return s - p
                return s / p if p > 0 else (math.inf if s > 0 else math.nan)
            value = rel(out["score"][key]["value"], out["pyxtal"][key]["value"])
            comp[f"{key}_{'score_over_pyxtal' if kind == 'ratio' else 'score_minus_pyxtal'}"] = {
                "value": round(value, 4) if math.isfinite(value) else value,
                "ci95": _ci([rel(bs[key], bp[key]) for bs, bp in zip(boot["score"], boot["pyxtal"], strict=True)])}
        rec = comp["recovery_relaxed_score_over_pyxtal"]["value"]
        comp["goals"] = {
            "recovery_at_least_1.5x_pyxtal": bool(math.isfinite(rec) and rec >= 1.5) or rec == math.inf,
            "median_steps_lower": out["score"]["median_steps"]["value"] < out["pyxtal"]["median_steps"]["value"],
            "share_converged_higher": out["score"]["share_converged"]["value"] > out["pyxtal"]["share_converged"]["value"],
        }
        out["score_vs_pyxtal"] = comp
    return out


# --- coverage (CDVAE COV-R / COV-P) -----------------------------------------------------------------
class Fingerprints:
    """matminer's CrystalNN site fingerprint ("ops", mean over sites) and Magpie composition features."""

    def __init__(self) -> None:
        from matminer.featurizers.composition.composite import ElementProperty
        from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

        self.site = CrystalNNFingerprint.from_preset("ops")
        self.comp = ElementProperty.from_preset("magpie")

    def __call__(self, structure: Structure) -> tuple[np.ndarray, np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                struct = np.mean([self.site.featurize(structure, i) for i in range(len(structure))], axis=0)
            except Exception:  # CrystalNN fails on some degenerate cells: counted as no fingerprint
                struct = np.full(61, np.nan)
            comp = np.asarray(self.comp.featurize(structure.composition), float)
        return np.asarray(struct, float), comp


def matminer_available() -> bool:
    try:
        import matminer  # noqa: F401
    except ImportError:
        return False
    return True


def coverage(samples: tuple[np.ndarray, np.ndarray], refs: tuple[np.ndarray, np.ndarray], *,
             comp_mean: np.ndarray, comp_std: np.ndarray) -> dict[str, float]:
    """CDVAE's COV-R/COV-P: structure fingerprints (n, 61), composition fingerprints (n, 132), normalised here."""
    from scipy.spatial.distance import cdist

    s_struct, s_comp = samples
    r_struct, r_comp = refs
    ok = np.isfinite(s_struct).all(1) & np.isfinite(s_comp).all(1)
    s_struct, s_comp = s_struct[ok], (s_comp[ok] - comp_mean) / comp_std
    r_comp = (r_comp - comp_mean) / comp_std
    if not len(s_struct):
        return {"cov_r": math.nan, "cov_p": math.nan, "n_samples": 0, "n_refs": len(r_struct)}
    d_struct, d_comp = cdist(s_struct, r_struct), cdist(s_comp, r_comp)
    recall = (d_struct.min(0) <= COV_CUTOFFS["struct"]) & (d_comp.min(0) <= COV_CUTOFFS["comp"])
    precision = (d_struct.min(1) <= COV_CUTOFFS["struct"]) & (d_comp.min(1) <= COV_CUTOFFS["comp"])
    return {"cov_r": round(float(recall.mean()), 4), "cov_p": round(float(precision.mean()), 4),
            "n_samples": len(s_struct), "n_refs": len(r_struct)}


def _fingerprints(structures: Sequence[Structure], fp: Fingerprints, progress: Progress | None,
                  label: str) -> tuple[np.ndarray, np.ndarray]:
    structs, comps = [], []
    for i, s in enumerate(structures):
        a, b = fp(s)
        structs.append(a)
        comps.append(b)
        if progress is not None and (i + 1) % 10 == 0:
            progress(label, i + 1, len(structures))
    return np.array(structs).reshape(len(structures), -1), np.array(comps).reshape(len(structures), -1)


def coverage_report(samples_by_decoder: dict[str, list[Sample]], bench_ids: Sequence[str], *,
                    max_samples: int = 100, seed: int = 0, mp20: Path = MP20,
                    progress: Progress | None = None) -> dict[str, Any]:
    """COV-R/COV-P of each decoder's unrelaxed and relaxed samples (a seeded subset of at most ``max_samples``
    of each) against all MP-20 validation crystals and against the benchmark crystals alone."""
    if not matminer_available():
        return {"skipped": "matminer is not installed (pip install matminer); no fingerprints computed"}
    import matminer

    from discovery.gfn.tables import cache_dir

    fp = Fingerprints()
    table = mp20 / "mp20_val_cif.csv.gz"
    frame = pd.read_csv(table)
    cache = cache_dir() / "decoder-bench" / f"mp20_val_fp-{table.stat().st_size}-{matminer.__version__}.npz"
    if cache.exists():  # the reference fingerprints take minutes on a loaded 2-core box
        with np.load(cache) as z:
            ref_struct, ref_comp = z["struct"], z["comp"]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            refs = [Structure.from_str(c, fmt="cif") for c in frame["cif"]]
        ref_struct, ref_comp = _fingerprints(refs, fp, progress, "fingerprints (MP-20 val)")
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, struct=ref_struct, comp=ref_comp)
    mean, std = ref_comp.mean(0), ref_comp.std(0)
    std[std == 0] = 1.0
    subset = np.flatnonzero(frame["material_id"].isin(set(bench_ids)).to_numpy())
    out: dict[str, Any] = {"cutoffs": COV_CUTOFFS, "fingerprints": "matminer CrystalNNFingerprint('ops', mean over "
                           "sites) + ElementProperty('magpie'), standardised with the MP-20 validation mean/std"}
    rng = np.random.default_rng(seed)
    for name, samples in samples_by_decoder.items():
        for stage in ("unrelaxed", "relaxed"):
            structs = [s.structure if stage == "unrelaxed" else s.relaxed for s in samples]
            present = [x for x in structs if x is not None]
            if not present:
                continue
            if len(present) > max_samples:  # fingerprints cost ~0.2-1 s per structure here: a seeded subset
                present = [present[i] for i in sorted(rng.choice(len(present), max_samples, replace=False))]
            fps = _fingerprints(present, fp, progress, f"fingerprints ({name}, {stage})")
            out[f"{name}_{stage}"] = {
                "vs_mp20_val": coverage(fps, (ref_struct, ref_comp), comp_mean=mean, comp_std=std),
                "vs_benchmark_crystals": coverage(fps, (ref_struct[subset], ref_comp[subset]), comp_mean=mean,
                                                  comp_std=std)}
    return out


# --- the whole evaluation ----------------------------------------------------------------------------------
def run_decoder_bench(cfg: DecoderBench, *, progress: Progress | None = None) -> dict[str, Any]:
    """Decode, relax, match, summarise and (optionally) cover; a JSON-ready dict."""
    import os
    import platform

    import torch

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    pairs = benchmark_crystals(cfg.n, max_atoms=cfg.max_atoms)
    crystals = [c for c, _ in pairs]
    truth = {c.id: s for c, s in pairs}
    ids = [c.id for c in crystals]
    samples: dict[str, list[Sample]] = {}
    timings: dict[str, dict[str, float]] = {}
    for name in cfg.decoders:
        t0 = time.perf_counter()
        samples[name] = decode_samples(crystals, decoder=name, lattice=cfg.lattice, k=cfg.k, seed=cfg.seed,
                                       checkpoint=cfg.checkpoint, progress=progress)
        t1 = time.perf_counter()
        if cfg.relax:
            relax_samples(samples[name], steps=cfg.steps, fmax=cfg.fmax, mp20_dir=cfg.mp20_dir, progress=progress,
                          label=f"relax {name}")
        t2 = time.perf_counter()
        match_samples(samples[name], truth)
        timings[name] = {"decode_s": round(t1 - t0, 1), "relax_s": round(t2 - t1, 1),
                         "match_s": round(time.perf_counter() - t2, 1)}
    summary = summarize({n: per_crystal(s, ids) for n, s in samples.items()}, bootstrap=cfg.bootstrap, seed=cfg.seed)
    report: dict[str, Any] = {
        "benchmark": "structure decoders on MP-20 validation crystals (issue 16)",
        "settings": {**asdict(cfg), "decoders": list(cfg.decoders)},
        "lattice_given": {"hint": "the true lattice of each row (pyxtal: placed inside it; score: refined from it)",
                          "free": "no lattice (pyxtal: its own random lattice; score: its learned prior)"}[cfg.lattice],
        "crystals": ids, "summary": summary, "timings_s": timings,
        "per_sample": {n: [{"id": s.crystal_id, "j": s.j, "status": s.status, "n_steps": s.n_steps,
                            "e_hull": None if not math.isfinite(s.e_hull) else s.e_hull,
                            "match_unrelaxed": s.match_unrelaxed, "match_relaxed": s.match_relaxed,
                            "decode_s": round(s.decode_s, 3), "error": s.error, **s.extra} for s in ss]
                       for n, ss in samples.items()},
    }
    if "score" in cfg.decoders:
        dec = score_decoder(cfg.checkpoint)
        report["score_checkpoint"] = {"path": cfg.checkpoint or "shipped (discovery/data/checkpoints/score-decoder)",
                                      "meta": getattr(dec, "meta", {})}
    if cfg.coverage:
        t0 = time.perf_counter()
        report["coverage"] = coverage_report(samples, ids, max_samples=cfg.coverage_samples, seed=cfg.seed,
                                             progress=progress)
        report["timings_s"]["coverage_s"] = round(time.perf_counter() - t0, 1)
    report["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": 1,
                         "load_avg_start_end": [round(x, 2) for x in os.getloadavg()]}
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    return report



def _sample_of(record: dict[str, Any]) -> Sample:
    e_hull = record.get("e_hull")
    extra = {k: v for k, v in record.items() if k in ("volume_scale", "attempt", "fallback")}
    return Sample(record["id"], int(record["j"]), None, float(record.get("decode_s", 0.0)),
                  error=record.get("error", ""), status=record.get("status", ""), n_steps=int(record.get("n_steps", 0)),
                  e_hull=math.nan if e_hull is None else float(e_hull), match_unrelaxed=bool(record["match_unrelaxed"]),
                  match_relaxed=bool(record["match_relaxed"]), extra=extra)


SAME_SETTINGS = ("n", "k", "max_atoms", "lattice", "relax", "steps", "fmax", "seed", "bootstrap")


def merge_reports(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report from runs of different decoders on the same crystals and settings (e.g. pyxtal run first,
    score later): per-sample records are joined and the summary (paired bootstrap) recomputed."""
    first = reports[0]
    for other in reports[1:]:
        diff = [k for k in SAME_SETTINGS if other["settings"][k] != first["settings"][k]]
        if diff or other["crystals"] != first["crystals"]:
            raise ValueError(f"reports differ in {diff or 'their crystals'}; merge only runs of the same settings")
    per_sample: dict[str, list[dict[str, Any]]] = {}
    timings: dict[str, Any] = {}
    cov: dict[str, Any] = {}
    for rep in reports:
        per_sample.update(rep["per_sample"])
        timings.update({f"{k}" if k in rep["per_sample"] else f"{k} ({'+'.join(rep['per_sample'])})": v
                        for k, v in rep["timings_s"].items()})
        if "coverage" in rep:
            cov.update(rep["coverage"])
    ids = first["crystals"]
    per = {name: per_crystal([_sample_of(r) for r in recs], ids) for name, recs in per_sample.items()}
    settings = {**first["settings"], "decoders": list(per_sample)}
    extras = {k: v for rep in reversed(reports) for k, v in rep.items()}  # e.g. score_checkpoint of a later run
    return {**extras, **first, "settings": settings, "per_sample": per_sample, "timings_s": timings, "coverage": cov,
            "summary": summarize(per, bootstrap=int(settings["bootstrap"]), seed=int(settings["seed"])),
            "merged_from": [{"decoders": list(r["per_sample"]), "machine": r.get("machine"),
                             "wall_s": r.get("wall_s"), "checkpoint": r["settings"].get("checkpoint")}
                            for r in reports]}
