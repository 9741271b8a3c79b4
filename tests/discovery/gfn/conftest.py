"""Small search spaces and models shared by the Crystal-GFN tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from discovery.gfn import CrystalGFN, PolicyConfig, SearchSpace, TrainConfig


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _table_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A fresh table cache per session (the paper's space comes from the shipped file)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MATLOOP_CACHE_DIR", str(tmp_path_factory.mktemp("matloop-cache")))
        yield


@pytest.fixture(scope="session")
def small_space() -> SearchSpace:
    return SearchSpace(elements=("Li", "Na", "Mn", "Fe", "Cu", "S", "Cl", "O", "N"), max_elements=3,
                       max_atoms_per_element=8, max_atoms=20)


@pytest.fixture(scope="session")
def small_gfn(small_space: SearchSpace) -> CrystalGFN:
    return CrystalGFN(small_space, seed=0, policy=PolicyConfig(hidden=64, layers=2),
                      train=TrainConfig(batch_size=32))
