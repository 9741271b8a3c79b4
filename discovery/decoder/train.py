"""Training data, denoising score-matching loss, training loop and checkpoint I/O.

Data: MP-20 train CIFs, each standardised by spglib (symprec 0.1) to its conventional cell (ITA
settings: the cell the Wyckoff tables use). From *all* of them: Wyckoff-letter frequencies per space group
(one count per orbit) and a per-element volume fit ``V ≈ Σ n_el v_el`` (non-negative least squares, Å³) —
the lattice prior's scale. Cells of at most ``max_atoms`` atoms train the score network.

Loss (denoising score matching, each level weighted by σ², Song & Ermon): positions get periodic noise
per atom in the full fractional space, ``f̃ = f + σ_x ε mod 1``, target the wrapped-normal score; the
free lattice parameters of the crystal system get ``q̃ = q + σ_L ε``, target ``−ε/σ_L``, the network's
score on y projected with ``Tᵀ``. Levels: ``t_x ~ U(0, 1)``; ``t_l = t_x`` half of the time, otherwise
``U(t_x, 1)`` (a lattice less noisy than the positions, as when sampling from a lattice hint).
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from discovery.crystal import cell_volume
from discovery.decoder.graph import lattice_to_q, lattice_tying
from discovery.decoder.model import GraphBatch, ModelConfig, ScoreNet

DEFAULT_TRAIN = Path(__file__).resolve().parents[1] / "data" / "mp20" / "mp20_train_cif.csv.gz"
CHECKPOINT_FILE = "model.pt"


@dataclass(frozen=True, slots=True)
class Cell:
    """One conventional cell: ``z`` (n,) atomic numbers, ``frac`` (n, 3), ``sg``, ``q`` free lattice params."""

    z: np.ndarray
    frac: np.ndarray
    sg: int
    q: np.ndarray


@dataclass(slots=True)
class TrainingData:
    cells: list[Cell]
    frequencies: dict[int, dict[str, float]]  # space group → Wyckoff letter → orbits in the data
    volumes: dict[str, float]  # element → Å³ per atom
    n_structures: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, list[float]] = field(default_factory=dict)  # "sg:N" / "system:NAME" → lattice_shapes


def lattice_shapes(cells: list[Cell], *, min_cells: int = 3) -> dict[str, list[float]]:
    """Mean ``(ln a, ln b, ln c) − ⅓ ln V`` and mean angles (rad) per space group (``"sg:N"``, at least
    ``min_cells`` cells) and per lattice system (``"system:NAME"``): the prior cell's shape."""
    from discovery.symmetry import space_group

    groups: dict[str, list[np.ndarray]] = defaultdict(list)
    for c in cells:
        y0, T, _ = lattice_tying(c.sg)
        y = y0 + T @ c.q
        params = np.array([*np.exp(y[:3]), *np.degrees(y[3:])])
        vol = float(cell_volume(params[None])[0])
        d = np.concatenate([y[:3] - math.log(vol) / 3, y[3:]])
        groups[f"sg:{c.sg}"].append(d)
        groups[f"system:{space_group(c.sg).lattice_system}"].append(d)
    return {k: np.mean(v, axis=0).tolist() for k, v in groups.items() if k.startswith("system:") or len(v) >= min_cells}


def standardize(structure: object) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """spglib (symprec 0.1) conventional cell of a pymatgen structure: ``(sg, lattice rows (3, 3) Å,
    frac (n, 3), atomic numbers (n,), Wyckoff letter per orbit)``."""
    import spglib

    s = structure
    cell = (s.lattice.matrix.tolist(), s.frac_coords.tolist(), [int(site.specie.Z) for site in s])  # type: ignore[attr-defined]
    ds = spglib.get_symmetry_dataset(cell, symprec=0.1)
    if ds is None:
        raise ValueError("spglib found no symmetry")
    letters = [ds.wyckoffs[i] for i in sorted(set(int(e) for e in ds.equivalent_atoms))]
    return int(ds.number), np.array(ds.std_lattice), np.mod(np.array(ds.std_positions), 1.0), \
        np.array(ds.std_types, dtype=int), letters


def prepare_data(path: str | Path = DEFAULT_TRAIN, *, max_atoms: int = 20, limit: int | None = None) -> TrainingData:
    """Read the CIF table (column ``cif``) and build :class:`TrainingData`."""
    import pandas as pd
    from pymatgen.core import Element, Lattice, Structure
    from scipy.optimize import nnls

    frame = pd.read_csv(path)
    if limit is not None:
        frame = frame.iloc[:limit]
    cells: list[Cell] = []
    freq: dict[int, Counter[str]] = defaultdict(Counter)
    comps: list[Counter[str]] = []
    vols: list[float] = []
    skipped: Counter[str] = Counter()
    for cif in frame["cif"]:
        try:
            s = Structure.from_str(cif, fmt="cif")
            sg, lat, frac, z, letters = standardize(s)
        except Exception:  # a CIF pymatgen/spglib cannot read is skipped and counted
            skipped["unreadable"] += 1
            continue
        freq[sg].update(letters)
        comps.append(Counter(Element.from_Z(int(x)).symbol for x in z))
        lattice = Lattice(lat)
        vols.append(float(lattice.volume))
        if len(z) > max_atoms:
            skipped[f"more than {max_atoms} atoms"] += 1
            continue
        q = lattice_to_q(sg, lattice.parameters)
        cells.append(Cell(z, frac, sg, q))
    elements = sorted({el for c in comps for el in c})
    matrix = np.array([[c.get(el, 0) for el in elements] for c in comps], dtype=float)
    v, _ = nnls(matrix, np.array(vols))
    volumes = {el: float(x) for el, x in zip(elements, v, strict=True)}
    return TrainingData(cells, {sg: dict(c) for sg, c in freq.items()}, volumes, len(frame), dict(skipped),
                        lattice_shapes(cells))


def prior_volume(counts: dict[str, int], volumes: dict[str, float]) -> float:
    """Prior cell volume Å³: Σ n_el v_el (unseen or zero-fit elements: the mean of the positive fits)."""
    positive = [v for v in volumes.values() if v > 0]
    default = float(np.mean(positive)) if positive else 15.0
    vol = sum(n * (volumes.get(el) or default) for el, n in counts.items())
    return max(vol, 3.0 * sum(counts.values()))


def wrapped_score_times_sigma(d: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """σ × score of a wrapped normal N(0, σ²) on the unit circle at displacement ``d`` (same shapes)."""
    k = torch.arange(-3, 4, dtype=d.dtype)
    e = d[..., None] + k
    w = torch.softmax(-(e**2) / (2 * sigma[..., None] ** 2), dim=-1)
    return (w * (-e / sigma[..., None])).sum(-1)


def make_batch(cells: list[Cell], volumes: dict[str, float], config: ModelConfig, gen: torch.Generator
               ) -> tuple[GraphBatch, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noised batch and targets: ``(batch, σ_x·target (N, 3), ε_q (B, 6) zero-padded, T (B, 6, 6) padded,
    mask (B, 6) of free lattice parameters)``."""
    from pymatgen.core import Element

    b = len(cells)
    t_x = torch.rand(b, generator=gen, dtype=torch.float64)
    lower = t_x + (1 - t_x) * torch.rand(b, generator=gen, dtype=torch.float64)
    t_l = torch.where(torch.rand(b, generator=gen, dtype=torch.float64) < 0.5, t_x, lower)
    sig_x = config.sigma_x_max * (config.sigma_x_min / config.sigma_x_max) ** t_x
    sig_l = config.sigma_l_max * (config.sigma_l_min / config.sigma_l_max) ** t_l
    zs, fracs, targets, batch_idx = [], [], [], []
    ys, systems, log_l0 = [], [], []
    tmat = torch.zeros(b, 6, 6, dtype=torch.float64)
    eps_q = torch.zeros(b, 6, dtype=torch.float64)
    mask = torch.zeros(b, 6, dtype=torch.float64)
    for i, c in enumerate(cells):
        n = len(c.z)
        f = torch.as_tensor(c.frac)
        d = sig_x[i] * torch.randn(n, 3, generator=gen, dtype=torch.float64)
        fracs.append(torch.remainder(f + d, 1.0))
        targets.append(wrapped_score_times_sigma(d, sig_x[i].expand(n, 3)))
        zs.append(torch.as_tensor(c.z))
        batch_idx.append(torch.full((n,), i))
        y0, T, system = lattice_tying(c.sg)
        nf = T.shape[1]
        e = torch.randn(nf, generator=gen, dtype=torch.float64)
        eps_q[i, :nf] = e
        mask[i, :nf] = 1.0
        tmat[i, :, :nf] = torch.as_tensor(T)
        ys.append(torch.as_tensor(y0) + torch.as_tensor(T) @ (torch.as_tensor(c.q) + sig_l[i] * e))
        systems.append(system)
        counts = Counter(Element.from_Z(int(x)).symbol for x in c.z)
        log_l0.append(math.log(prior_volume(dict(counts), volumes)) / 3)
    g = GraphBatch(torch.cat(zs).long(), torch.cat(fracs), torch.cat(batch_idx), torch.stack(ys),
                   torch.as_tensor(systems), torch.as_tensor(log_l0, dtype=torch.float64), t_x, t_l)
    return g, torch.cat(targets), eps_q, tmat, mask


def denoising_loss(model: ScoreNet, g: GraphBatch, target_x: torch.Tensor, eps_q: torch.Tensor,
                   tmat: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(position loss, lattice loss)``: mean squared error of σ × score against σ × target."""
    cfg = model.config
    pos, lat = model(g)
    pos, lat = pos.to(torch.float64), lat.to(torch.float64)
    sig_x = cfg.sigma_x_max * (cfg.sigma_x_min / cfg.sigma_x_max) ** g.t_x
    sig_l = cfg.sigma_l_max * (cfg.sigma_l_min / cfg.sigma_l_max) ** g.t_l
    loss_x = ((pos * sig_x[g.batch, None] - target_x) ** 2).mean()
    s_q = torch.einsum("bij,bi->bj", tmat, lat) * sig_l[:, None]
    loss_l = (((s_q + eps_q) ** 2) * mask).sum() / mask.sum()
    return loss_x, loss_l


@dataclass(slots=True)
class TrainResult:
    steps: int
    seconds: float
    history: list[tuple[int, float, float]]  # (step, position loss, lattice loss), running means


def train_model(model: ScoreNet, data: TrainingData, *, minutes: float, batch_size: int = 32, lr: float = 2e-3,
                seed: int = 0, max_steps: int | None = None,
                on_step: Callable[[int, float, float, float], None] | None = None) -> TrainResult:
    """Adam on the denoising loss until ``minutes`` (or ``max_steps``) is spent; cosine learning-rate decay
    over the time budget. ``on_step(step, elapsed fraction, position loss, lattice loss)``."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.monotonic()
    budget = minutes * 60.0
    history: list[tuple[int, float, float]] = []
    run_x = run_l = None
    step = 0
    model.train()
    while True:
        elapsed = time.monotonic() - start
        frac = min(elapsed / budget, 1.0) if budget > 0 else 1.0
        if max_steps is not None:
            frac = max(frac, step / max_steps) if budget > 0 else step / max_steps
        if frac >= 1.0:
            break
        for group in opt.param_groups:
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        idx = torch.randint(len(data.cells), (batch_size,), generator=gen).tolist()
        g, tx, eq, tm, mk = make_batch([data.cells[i] for i in idx], data.volumes, model.config, gen)
        loss_x, loss_l = denoising_loss(model, g, tx, eq, tm, mk)
        opt.zero_grad()
        (loss_x + loss_l).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        lx, ll = loss_x.item(), loss_l.item()
        run_x = lx if run_x is None else 0.98 * run_x + 0.02 * lx
        run_l = ll if run_l is None else 0.98 * run_l + 0.02 * ll
        if step % 50 == 0:
            history.append((step, run_x, run_l))
        if on_step is not None:
            on_step(step, frac, run_x, run_l)
    model.eval()
    return TrainResult(step, time.monotonic() - start, history)


def save_checkpoint(path: str | Path, model: ScoreNet, data: TrainingData, meta: dict[str, object]) -> Path:
    """Write ``model.pt`` (config, float32 weights, Wyckoff frequencies, element volumes, meta) into ``path``."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float32) for k, v in model.state_dict().items()}
    torch.save({"format": 1, "config": model.config.to_dict(), "state_dict": state,
                "frequencies": data.frequencies, "volumes": data.volumes, "shapes": data.shapes, "meta": meta},
               out / CHECKPOINT_FILE)
    return out / CHECKPOINT_FILE


@dataclass(slots=True)
class Checkpoint:
    model: ScoreNet  # float32, eval mode
    frequencies: dict[int, dict[str, float]]
    volumes: dict[str, float]
    shapes: dict[str, list[float]]
    meta: dict[str, object]


def load_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint directory (or its ``model.pt``)."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_FILE
    blob = torch.load(p, map_location="cpu", weights_only=False)
    model = ScoreNet(ModelConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return Checkpoint(model, {int(k): v for k, v in blob["frequencies"].items()}, dict(blob["volumes"]),
                      dict(blob.get("shapes", {})), dict(blob["meta"]))
