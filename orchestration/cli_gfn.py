"""`matloop gfn` commands: train the Crystal-GFN, sample crystal tables; `matloop bench gfn`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from orchestration.errors import fail

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    import numpy as np

    from discovery.crystal import Crystal
    from discovery.gfn import Reward

app = typer.Typer(
    help="Crystal-GFN: train on a reward, sample crystal tables.\n\nExample: matloop gfn train --reward density --iterations 500 --out runs/gfn-density",
    no_args_is_help=True,
)
console = Console(stderr=True)
_DEFAULT_WORKERS = min(2, os.cpu_count() or 1)  # sampling processes: the two cores of the reference machine

def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.replace(",", " ").split()] if text else None


def _range(text: str | None, name: str) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        lo, hi = (float(x) for x in text.replace(",", " ").replace(":", " ").split())
    except ValueError:
        fail(f"--{name} takes two numbers 'MIN MAX' (e.g. --{name} '10 20'), got {text!r}")
    return lo, hi


class ProxyReward:
    """Crystal-GFN log-reward from a fitted proxy's posterior mean (the paper's rewards).

    ``boltzmann``: log R = −μ/T (``maximize``: +μ/T) — formation energy with T = 1/8 is R = exp(−8·E).
    ``target``: log R = −(μ − target)²/T — band gap with T = 1/8 is R = exp(−8·(E_g − 1.34)²).
    Built on :mod:`discovery.proxy.acquisition` (``greedy``/``target_value`` + ``log_reward_from_acquisition``).
    """

    def __init__(self, proxy: object, *, transform: Literal["boltzmann", "target"] = "boltzmann",
                 target_value: float = 1.34, temperature: float = 0.125, maximize: bool = False) -> None:
        self.proxy = proxy
        self.transform = transform
        self.target_value = target_value
        self.temperature = temperature
        self.maximize = maximize

    @classmethod
    def load(cls, directory: Path, **kwargs: object) -> ProxyReward:
        from discovery.proxy import EnsembleProxy

        return cls(EnsembleProxy.load(directory), **kwargs)  # type: ignore[arg-type]

    def __call__(self, crystals: Sequence[Crystal]) -> np.ndarray:
        import numpy as np

        from discovery.proxy import greedy, log_reward_from_acquisition, target_value

        post = self.proxy.posterior(crystals)  # type: ignore[attr-defined]
        if self.transform == "target":
            scores = target_value(post, value=self.target_value)
        else:
            scores = greedy(post, maximize=self.maximize)
        return np.asarray(log_reward_from_acquisition(scores.float(), temperature=self.temperature).numpy(), dtype=float)


def proxy_training_reward(proxy: object, settings: Mapping[str, Any]) -> Reward:
    """The reward ``gfn train --reward proxy`` trains on, from its settings as ``train_report.json`` records them
    (``transform``, ``temperature``, ``maximize``, ``target_value`` (None: 1.34), ``volume_prior``): a
    :class:`ProxyReward` on ``proxy`` times the volume likelihood to the power ``volume_prior`` (0: none)."""
    from discovery.gfn import VolumePriorReward

    target = settings.get("target_value")
    fn: Reward = ProxyReward(proxy, transform=settings["transform"], temperature=float(settings["temperature"]),
                             maximize=bool(settings["maximize"]), target_value=1.34 if target is None else float(target))
    weight = float(settings.get("volume_prior", 0.0))
    return VolumePriorReward(fn, weight=weight) if weight > 0 else fn


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), console=console)


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write (config.json + model.pt).")],
    reward: Annotated[str, typer.Option(help="Reward: density (exact, g/cm³), uniform, or proxy (needs --proxy).")] = "density",
    proxy: Annotated[Path | None, typer.Option(help="Proxy model directory from `matloop proxy fit` (--reward proxy).")] = None,
    transform: Annotated[str, typer.Option(help="Proxy reward: boltzmann (R = exp(∓μ/T), minimise unless --maximize) "
                                                "or target (R = exp(−(μ − target)²/T)).")] = "boltzmann",
    target_value: Annotated[float, typer.Option(help="Desired property value for --transform target (e.g. band gap 1.34 eV).")] = 1.34,
    temperature: Annotated[float, typer.Option(help="Reward temperature T (paper: 1/8, i.e. exp(−8·E)).")] = 0.125,
    maximize: Annotated[bool, typer.Option(help="--transform boltzmann: maximise the property instead of minimising it.")] = False,
    iterations: Annotated[int, typer.Option(min=1, help="Training iterations (batches of trajectories).")] = 500,
    batch_size: Annotated[int, typer.Option(min=1, help="Trajectories per iteration.")] = 64,
    elements: Annotated[str | None, typer.Option(help="Element vocabulary, e.g. 'Li Mn O' (default: the paper's 22).")] = None,
    max_elements: Annotated[int, typer.Option(min=1, help="Most distinct elements per crystal.")] = 5,
    max_atoms_per_element: Annotated[int, typer.Option(min=1, help="Most atoms of one element per cell.")] = 16,
    max_atoms: Annotated[int, typer.Option(min=1, help="Most atoms per conventional cell.")] = 80,
    lengths: Annotated[str | None, typer.Option(help="Lattice lengths (Å) 'MIN MAX' (default: the paper's '0.9 100'); "
                                                     "the lattice Betas resolve a length to ± ~0.6 % of the range.")] = None,
    angles: Annotated[str | None, typer.Option(help="Lattice angles (°) 'MIN MAX' (default: the paper's '50 150').")] = None,
    beta: Annotated[float, typer.Option(help="Density reward exponent: R = ρ^β.")] = 4.0,
    lr: Annotated[float, typer.Option(help="Adam learning rate of the policies.")] = 5e-4,
    lr_final: Annotated[float | None, typer.Option(help="Decay both learning rates along half a cosine to this "
                                                        "fraction of their start over this command's --iterations "
                                                        "(e.g. 0.02); default: constant.")] = None,
    epsilon: Annotated[float, typer.Option(help="Share of random actions while training.")] = 0.1,
    replay: Annotated[int, typer.Option(help="Replay-buffer capacity (0: off).")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue training the checkpoint in --out if present.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    threads: Annotated[int, typer.Option(min=1, help="Torch threads.")] = 1,
    save_every: Annotated[int | None, typer.Option(min=1, help="Save the checkpoint every N iterations (long runs).")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Stop after the first checkpoint past this wall time (minutes).")] = None,
    volume_prior: Annotated[float, typer.Option(min=0, help="--reward proxy: weight w of the volume model's likelihood "
                                                            "in the reward (Student-t on the ln-volume z-score; 0: off).")] = 1.0,
    beta_max: Annotated[float, typer.Option(min=1, help="Largest Beta parameter of the lattice policy: 100 resolves a "
                                                         "5 Å length to ±2 Å over 0.9–100 Å, 1,000 to ±0.6 Å.")] = 1000.0,
) -> None:
    """Train a Crystal-GFN with trajectory balance and save a checkpoint.

    Examples:
      matloop gfn train --reward density --iterations 500 --out runs/gfn-density
      matloop gfn train --reward proxy --proxy runs/proxy-fe --iterations 7813 --out runs/gfn-fe   # paper FE: exp(−8·E)
      matloop gfn train --reward proxy --proxy runs/proxy-bg --transform target --target-value 1.34 --out runs/gfn-bg
      matloop gfn train --reward proxy --proxy runs/proxy-fe --iterations 7813 --max-elements 4 \\
          --max-atoms-per-element 8 --max-atoms 32 --lengths '2.4 30' --out runs/gfn-fe-small   # the shipped FE model
    """
    import torch

    from discovery.gfn import (
        CrystalGFN,
        DensityReward,
        PolicyConfig,
        SearchSpace,
        TrainConfig,
        cosine_lr_factor,
        uniform_reward,
    )
    from discovery.proxy import EnsembleProxy

    torch.set_num_threads(threads)
    if lr_final is not None and not 0 < lr_final <= 1:
        fail(f"--lr-final {lr_final} must be a fraction in (0, 1] of --lr (e.g. 0.02)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    if reward not in ("density", "uniform", "proxy"):
        fail(f"--reward {reward!r} is not known; choose density, uniform or proxy")
    reward_fn: Callable[[Sequence[Crystal]], np.ndarray]
    reward_settings = {"transform": transform, "temperature": temperature,
                       "target_value": target_value if transform == "target" else None,
                       "maximize": maximize, "volume_prior": volume_prior}
    if reward == "proxy":
        if proxy is None:
            fail("--reward proxy needs --proxy DIR (a model from `matloop proxy fit`)")
        if transform not in ("boltzmann", "target"):
            fail(f"--transform {transform!r} is not known; choose boltzmann or target")
        try:
            reward_fn = proxy_training_reward(EnsembleProxy.load(proxy), reward_settings)
        except (ValueError, FileNotFoundError) as exc:
            fail(str(exc))
    else:
        reward_fn = DensityReward(beta=beta) if reward == "density" else uniform_reward
    try:
        if resume and (out / "config.json").exists():
            gfn = CrystalGFN.load(out, device=device)
        else:
            ranges = {k: v for k, v in (("length_range", _range(lengths, "lengths")),
                                        ("angle_range", _range(angles, "angles"))) if v is not None}
            space = SearchSpace(
                elements=tuple(_split(elements) or SearchSpace().elements), max_elements=max_elements,
                max_atoms_per_element=max_atoms_per_element, max_atoms=max_atoms, **ranges,  # type: ignore[arg-type]
            )
            with console.status("building constraint tables"):
                space.check_feasible()
            gfn = CrystalGFN(space, device=device, seed=seed, policy=PolicyConfig(beta_max=beta_max),
                             train=TrainConfig(batch_size=batch_size, lr=lr, epsilon=epsilon, replay_capacity=replay))
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    info = {"reward": reward, **({"proxy": str(proxy), **reward_settings} if reward == "proxy" else {}),
            "beta_max": gfn.policy_cfg.beta_max, "lr_final": lr_final}
    lr_factor = (None if lr_final is None
                 else cosine_lr_factor(start=gfn.iterations_done, iterations=iterations, final=lr_final))
    previous: list[dict[str, object]] = []
    if resume and (out / "train_report.json").exists():
        old = json.loads((out / "train_report.json").read_text())
        previous = old.get("segments", [{k: v for k, v in old.items() if k != "history"}])
    chunk = save_every or iterations
    t_start = time.perf_counter()
    done = 0
    history: list[dict[str, float]] = []
    with _progress() as bar:
        task = bar.add_task("training", total=iterations, info="")
        while done < iterations:
            def show(i: int, row: dict[str, float], base: int = done) -> None:
                bar.update(task, completed=base + i, info=f"loss {row['loss']:.3g}  log Z {row['log_z']:.3g}  "
                                                          f"{row['trajectories_per_s']:.0f} traj/s")

            k = min(chunk, iterations - done)
            report = gfn.train(reward_fn, iterations=k, progress=show, log_every=max(1, min(10, k)),
                               lr_factor=lr_factor)
            done += k
            history += report.history
            gfn.save(out)
            previous.append({key: v for key, v in report.__dict__.items() if key != "history"})
            total_traj = sum(int(p.get("trajectories", 0)) for p in previous)  # type: ignore[call-overload]
            (out / "train_report.json").write_text(json.dumps(
                {**info, "total_iterations": gfn.iterations_done, "total_trajectories": total_traj,
                 "seconds_this_run": round(time.perf_counter() - t_start, 1), "loss": report.loss, "log_z": report.log_z,
                 "segments": previous, "history": history}, indent=2))
            if save_every:
                console.print(f"checkpoint: {gfn.iterations_done} iterations, {total_traj} trajectories, "
                              f"{report.trajectories_per_s:.0f} traj/s, loss {report.loss:.3g}, log Z {report.log_z:.3g}")
            if max_minutes is not None and time.perf_counter() - t_start > 60 * max_minutes:
                console.print(f"stopping after {done} of {iterations} iterations: --max-minutes {max_minutes} reached")
                break
    seconds = time.perf_counter() - t_start
    console.print(f"saved {out} — {done * gfn.train_cfg.batch_size} trajectories in {seconds:.1f} s "
                  f"({done * gfn.train_cfg.batch_size / max(seconds, 1e-9):.0f}/s), final loss {report.loss:.3g}, "
                  f"log Z {report.log_z:.3g}")


@app.command()
def sample(
    out: Annotated[Path, typer.Option(help="Crystal-table CSV to write.")],
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="Number of crystals.")] = 1000,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint directory from `matloop gfn train`.")] = None,
    untrained: Annotated[bool, typer.Option(help="Sample a freshly initialised model (paper's baseline).")] = False,
    elements: Annotated[str | None, typer.Option(help="Restrict to these elements, e.g. 'Fe O'.")] = None,
    max_atoms_per_element: Annotated[int | None, typer.Option(help="Restrict atoms per element.")] = None,
    max_atoms: Annotated[int | None, typer.Option(help="Restrict atoms per cell.")] = None,
    space_groups: Annotated[str | None, typer.Option(help="Restrict to space-group numbers, e.g. '225 227'.")] = None,
    crystal_lattice_systems: Annotated[str | None, typer.Option(help="Restrict to systems, e.g. 'cubic'.")] = None,
    point_symmetries: Annotated[str | None, typer.Option(help="Restrict to point symmetries, e.g. 'centrosymmetric'.")] = None,
    lengths: Annotated[str | None, typer.Option(help="Restrict lattice lengths (Å), e.g. '10 20'.")] = None,
    angles: Annotated[str | None, typer.Option(help="Restrict lattice angles (°), e.g. '75 135'.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    threads: Annotated[int, typer.Option(min=1, help="Torch threads.")] = 1,
    workers: Annotated[int, typer.Option(min=1, help="Sampling processes on CPU, one torch thread each (same crystals for any value).")] = _DEFAULT_WORKERS,
) -> None:
    """Sample crystals and write a crystal table (space_group, composition, a, b, c, alpha, beta, gamma).

    Examples:
      matloop gfn sample --untrained -n 10000 --out untrained.csv
      matloop gfn sample --checkpoint runs/gfn -n 1000 --elements 'Fe O' --max-atoms-per-element 10 --out fe_o.csv
      matloop gfn sample --checkpoint runs/gfn -n 1000 --crystal-lattice-systems cubic --out cubic.csv
    """
    import torch

    from discovery.crystal import write_crystal_table
    from discovery.gfn import CrystalGFN, SearchSpace

    torch.set_num_threads(threads)
    if (checkpoint is None) == (not untrained):
        fail("give exactly one of --checkpoint DIR or --untrained")
    try:
        gfn = CrystalGFN.load(checkpoint, device=device) if checkpoint else CrystalGFN(SearchSpace(), device=device, seed=seed)
        restrict = {
            "elements": _split(elements), "max_atoms_per_element": max_atoms_per_element, "max_atoms": max_atoms,
            "space_groups": [int(x) for x in _split(space_groups) or []] or None,
            "crystal_lattice_systems": _split(crystal_lattice_systems), "point_symmetries": _split(point_symmetries),
            "length_range": _range(lengths, "lengths"), "angle_range": _range(angles, "angles"),
        }
        restrict = {k: v for k, v in restrict.items() if v is not None}
        with console.status("building constraint tables"):
            space = gfn.restricted(**restrict) if restrict else None
            gfn.env_for(space)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    t0 = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task("sampling", total=n, info="")
        crystals = gfn.sample(n, seed=seed, space=space, progress=lambda k: bar.update(task, completed=k),
                              workers=workers)
    dt = time.perf_counter() - t0
    write_crystal_table(crystals, out)
    console.print(f"wrote {len(crystals)} crystals to {out} in {dt:.1f} s ({len(crystals) / dt:.0f}/s)")


def bench_gfn(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object (the only output on stdout).")] = False,
    iterations: Annotated[int, typer.Option(min=1, help="Training iterations to time (warm).")] = 30,
    batch_size: Annotated[int, typer.Option(min=1, help="Trajectories per iteration.")] = 64,
    samples: Annotated[int, typer.Option(min=1, help="Crystals to sample and check.")] = 2000,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    threads: Annotated[int, typer.Option(min=1, help="Torch threads.")] = 1,
    pyxtal_pairs: Annotated[int, typer.Option(min=1, help="Distinct (space group, composition) pairs given to pyxtal.")] = 1000,
    workers: Annotated[int, typer.Option(min=1, help="Sampling processes on CPU, one torch thread each.")] = _DEFAULT_WORKERS,
    fresh: Annotated[bool, typer.Option(help="Also time fresh processes: `gfn sample --untrained -n 1000` and a "
                                             "50-iteration `gfn train`, whole process, with peak memory.")] = True,
    cold: Annotated[bool, typer.Option(help="Also time a cold build of every constraint table without the cache "
                                            "(table_build_s; 15–60 s).")] = True,
) -> None:
    """Time Crystal-GFN start-up and throughput in the paper's search space and check every sample.

    Fresh-process figures (whole process, imports included, peak RSS): fresh_sample_untrained_1000_s,
    fresh_train_50_s and fresh_train_trajectories_per_s. Table figures: table_build_s (cold build, no cache)
    and table_load_s (read from the on-disk cache and packed). Warm figures, in this process after a first
    draw: trajectories_per_s_train, samples_per_s_untrained, samples_per_s_1_process, samples_per_s (on
    --workers processes). Then the fraction of samples passing each validity check (SMACT with
    include_alloys=False, pyxtal decodability, lattice-system relations).

    Examples:
      matloop bench gfn --json
      matloop bench gfn --no-cold --no-fresh --iterations 100 --json   # warm figures only
    """
    from orchestration.bench_gfn import run_bench_gfn

    with console.status("starting") as status:
        result = run_bench_gfn(iterations=iterations, batch_size=batch_size, samples=samples, device=device,
                               threads=threads, pyxtal_pairs=pyxtal_pairs, workers=workers, fresh=fresh, cold=cold,
                               log=lambda msg: status.update(msg))
    if json_out:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            console.print(f"{k:>36}: {v}")


@app.command()
def evaluate(
    fe_checkpoint: Annotated[Path, typer.Option(help="Crystal-GFN trained on the formation-energy proxy.")],
    fe_proxy: Annotated[Path, typer.Option(help="Formation-energy proxy (`matloop proxy fit --target formation_energy_per_atom`).")],
    out: Annotated[Path, typer.Option(help="Directory for metrics.json, metrics.md and the PNG plots.")],
    bg_checkpoint: Annotated[Path | None, typer.Option(help="Crystal-GFN trained on the band-gap reward (optional).")] = None,
    bg_proxy: Annotated[Path | None, typer.Option(help="Band-gap proxy (with --bg-checkpoint).")] = None,
    n: Annotated[int, typer.Option("-n", "--n", min=100, help="Crystals sampled per model.")] = 10_000,
    n_restricted: Annotated[int, typer.Option(min=10, help="Crystals per model in each restricted experiment A–D.")] = 2000,
    pyxtal_max: Annotated[int, typer.Option(min=1, help="Distinct (space group, composition) pairs checked with pyxtal per model.")] = 200,
    target_gap: Annotated[float, typer.Option(help="Band-gap target (eV).")] = 1.34,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as one JSON object on stdout.")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    threads: Annotated[int, typer.Option(min=1, help="Torch threads.")] = 1,
    volume_baseline: Annotated[Path | None, typer.Option(help="volume_per_atom.npy from `matloop gfn check --out` of "
                                                             "another model, plotted beside ours.")] = None,
) -> None:
    """Reproduce the Crystal-GFN paper's sampling experiments: sample N crystals from the trained and the
    untrained model, and write the paper's figures beside ours (metrics.md, metrics.json) and plots.

    Example:
      matloop gfn evaluate --fe-checkpoint runs/gfn-fe --fe-proxy runs/proxy-fe \\
          --bg-checkpoint runs/gfn-bg --bg-proxy runs/proxy-bg -n 10000 --out docs/results/crystal-gfn
    """
    import torch

    from orchestration.reproduce import run_reproduction

    torch.set_num_threads(threads)
    if (bg_checkpoint is None) != (bg_proxy is None):
        fail("give both --bg-checkpoint and --bg-proxy, or neither")
    try:
        with console.status("starting") as status:
            result = run_reproduction(fe_checkpoint=fe_checkpoint, fe_proxy=fe_proxy, out=out, n=n,
                                      bg_checkpoint=bg_checkpoint, bg_proxy=bg_proxy, target_gap=target_gap,
                                      n_restricted=n_restricted, pyxtal_max=pyxtal_max, seed=seed, device=device,
                                      volume_baseline=volume_baseline, progress=lambda msg: status.update(msg))
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    if json_out:
        print(json.dumps(result))
    else:
        console.print((out / "metrics.md").read_text())
        console.print(f"written to {out}")


@app.command()
def check(
    checkpoint: Annotated[Path, typer.Option(help="Crystal-GFN checkpoint directory.")],
    proxy: Annotated[Path, typer.Option(help="Proxy whose predictions are compared with CHGNet (formation energy).")],
    n: Annotated[int, typer.Option("-n", "--n", min=10, help="Crystals sampled.")] = 2000,
    relax: Annotated[int, typer.Option(min=0, help="Random samples decoded and relaxed with CHGNet (0: none).")] = 64,
    workers: Annotated[int, typer.Option(min=1, help="CHGNet worker processes.")] = 2,
    reference: Annotated[str, typer.Option(help="Hull reference for E_hull.")] = "mp20+matbench",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Directory for check.json, relaxations.json, volumes.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    decoder: Annotated[str, typer.Option(help="Decoder of the relaxed rows: pyxtal or score.")] = "pyxtal",
    best_of: Annotated[int, typer.Option(min=1, help="Decodings per row; the lowest CHGNet single-point energy "
                                                     "per atom is relaxed.")] = 1,
    decode_volume: Annotated[str, typer.Option(help="row: the sampled cell's volume; model: the cell rescaled "
                                                    "to the volume model's V0.")] = "row",
    rattle: Annotated[float, typer.Option(min=0, max=0.5, help="Å each decoded atom is moved in a random direction "
                                                             "before relaxing, to break symmetric saddle points.")] = 0.0,
    engine: Annotated[str | None, typer.Option(help="CHGNet relaxation engine: ase or batched (default: the "
                                                    "oracle's).")] = None,
    cell_filter: Annotated[str | None, typer.Option(help="Cell filter of the relaxation: unit (ASE's UnitCellFilter) "
                                                         "or frechet (FrechetCellFilter, CHGNet's own relaxer's) "
                                                         "(default: the oracle's, unit).")] = None,
    optimizer: Annotated[str | None, typer.Option(help="Optimizer of the relaxation: FIRE or BFGS (BFGS runs on the "
                                                       "ase engine unless --engine batched is given) (default: the "
                                                       "oracle's, FIRE).")] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Wall-time limit per structure (decode + relax), s.")] = 300.0,
    volume_profile: Annotated[int, typer.Option(min=0, help="Profile this many samples' training reward along an "
                                                           "isotropic volume scale: the share in MP-20's range the "
                                                           "reward implies against the samples' own (0: off).")] = 0,
) -> None:
    """Physical check of a trained model: volume per atom against MP-20, validity, and a CHGNet relaxation of
    a random sample (share converged, proxy vs CHGNet formation energy, E_hull against the dense reference).

    Example:
      matloop gfn check --checkpoint discovery/data/checkpoints/crystal-gfn-fe \\
          --proxy discovery/data/checkpoints/proxy-fe -n 2000 --relax 64 --out runs/gfn-check --json
      matloop gfn check --checkpoint discovery/data/checkpoints/crystal-gfn-fe-small \
          --proxy discovery/data/checkpoints/proxy-fe --rattle 0.05 --cell-filter frechet
      matloop gfn check --checkpoint discovery/data/checkpoints/crystal-gfn-fe-small \
          --proxy discovery/data/checkpoints/proxy-fe --relax 0 --volume-profile 300   # sampler or reward?
    """
    import torch

    from orchestration.physical_check import CheckDecoding, run_check

    torch.set_num_threads(1)
    try:
        decoding = CheckDecoding(decoder=decoder, best_of=best_of, volume=decode_volume,  # type: ignore[arg-type]
                                 rattle=rattle)
        if engine not in (None, "ase", "batched"):
            raise ValueError(f"--engine: {engine!r} is not ase or batched")
        if cell_filter not in (None, "unit", "frechet"):
            raise ValueError(f"--cell-filter: {cell_filter!r} is not unit or frechet")
        if optimizer not in (None, "FIRE", "BFGS"):
            raise ValueError(f"--optimizer: {optimizer!r} is not FIRE or BFGS")
        with console.status("starting") as status:
            result = run_check(checkpoint=checkpoint, proxy=proxy, n=n, n_relax=relax, seed=seed, workers=workers,
                               reference=reference, out=out, decoding=decoding, engine=engine,  # type: ignore[arg-type]
                               cell_filter=cell_filter, optimizer=optimizer,  # type: ignore[arg-type]
                               volume_profile=volume_profile, timeout_s=timeout, progress=lambda msg: status.update(msg))
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    if json_out:
        print(json.dumps(result))
    else:
        console.print_json(json.dumps(result))
