"""Sampling in chunks, on one process or on several forked ones.

Every chunk of a draw gets its own seed from ``numpy.random.SeedSequence(seed)``, so a draw depends on
``(seed, batch_size)`` only: one process and N processes return the same crystals in the same order.
Worker processes are forked (Linux): they inherit the policy and the precomputed constraint tables
instead of rebuilding them, run one torch thread each and send the crystals back. CUDA, and platforms
without ``fork``, sample on the calling process.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from discovery.crystal import Crystal
from discovery.gfn.env import CrystalEnv
from discovery.gfn.policy import ForwardPolicy
from discovery.gfn.sampler import rollout

# what forked workers sample with: set by the parent just before the fork, inherited, cleared after
_WORK: tuple[CrystalEnv, ForwardPolicy] | None = None


def chunk_seeds(seed: int | None, n_chunks: int) -> list[int]:
    """One 32-bit seed per chunk from ``seed`` (a fresh one drawn from NumPy's global RNG when None)."""
    base = int(np.random.randint(2**31 - 1)) if seed is None else seed
    return [int(s) for s in np.random.SeedSequence(base).generate_state(n_chunks)]


def _init_worker() -> None:
    torch.set_num_threads(1)


def _sample_chunk(job: tuple[int, int]) -> list[Crystal]:
    k, seed = job
    assert _WORK is not None, "sampling worker started without a policy"
    env, policy = _WORK
    torch.manual_seed(seed)
    np.random.seed(seed)
    return rollout(env, policy, k, epsilon=0.0).crystals


def can_fork(env: CrystalEnv) -> bool:
    return env.device.type == "cpu" and "fork" in multiprocessing.get_all_start_methods()


def sample_chunks(env: CrystalEnv, policy: ForwardPolicy, sizes: Sequence[int], seeds: Sequence[int], *,
                  workers: int = 1) -> Iterator[list[Crystal]]:
    """Yield the crystals of each chunk (``sizes[i]`` trajectories seeded with ``seeds[i]``) in order;
    with ``workers`` > 1 (CPU) chunks run on that many forked processes, one torch thread each."""
    global _WORK
    jobs = list(zip(sizes, seeds, strict=True))
    _WORK = (env, policy)
    try:
        if workers <= 1 or len(jobs) < 2 or not can_fork(env):
            for job in jobs:
                yield _sample_chunk(job)
            return
        env.packed  # noqa: B018  # pack the tables before the fork: workers inherit them instead of each packing
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker) as pool:
            yield from pool.imap(_sample_chunk, jobs)
    finally:
        _WORK = None
