"""Training data, loss, a training step, checkpoint round trip; Wyckoff orbits and assignments."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from discovery.crystal import Crystal
from discovery.decoder import SamplerSettings, ScoreDecoder
from discovery.decoder.model import ModelConfig, ScoreNet
from discovery.decoder.train import (
    TrainingData,
    denoising_loss,
    load_checkpoint,
    make_batch,
    prepare_data,
    save_checkpoint,
    train_model,
    wrapped_score_times_sigma,
)
from discovery.decoder.wyckoff import enumerate_assignments, wyckoff_sites


@pytest.fixture(scope="module")
def tiny() -> TrainingData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare_data(limit=12, max_atoms=12)


def test_prepare_data_standardises_to_conventional_cells(tiny: TrainingData) -> None:
    assert 0 < len(tiny.cells) <= 12
    assert all(len(c.z) <= 12 and c.frac.shape == (len(c.z), 3) for c in tiny.cells)
    assert all(v >= 0 for v in tiny.volumes.values())
    assert sum(sum(f.values()) for f in tiny.frequencies.values()) >= len(tiny.cells)


def test_wrapped_score_is_periodic_and_gaussian_for_small_sigma() -> None:
    d = torch.tensor([0.01, -0.02, 0.3])
    small = wrapped_score_times_sigma(d, torch.full((3,), 0.05))
    assert torch.allclose(small, -d / 0.05, atol=1e-6)
    wide = wrapped_score_times_sigma(torch.tensor([0.5, -0.5]), torch.full((2,), 0.3))
    assert torch.allclose(wide, torch.zeros(2), atol=1e-9)  # antipodal point: zero score


def test_training_steps_reduce_the_denoising_loss(tiny: TrainingData) -> None:
    torch.manual_seed(0)
    model = ScoreNet(ModelConfig(hidden=32, layers=2))
    batch = make_batch(tiny.cells[:4], tiny.volumes, model.config, torch.Generator().manual_seed(123))

    def loss() -> float:
        with torch.no_grad():
            return float(sum(denoising_loss(model, *batch)))

    before = loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):  # the training step of train_model, on one fixed noised batch
        opt.zero_grad()
        sum(denoising_loss(model, *batch)).backward()  # type: ignore[union-attr]
        opt.step()
    after = loss()
    assert after < 0.7 * before, (before, after)
    result = train_model(model, tiny, minutes=0, max_steps=3, batch_size=4)
    assert result.steps == 3


def test_checkpoint_round_trip(tiny: TrainingData, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = ScoreNet(ModelConfig(hidden=16, layers=1))
    save_checkpoint(tmp_path / "ck", model, tiny, {"note": "test"})
    ck = load_checkpoint(tmp_path / "ck")
    loaded, freq, vols = ck.model, ck.frequencies, ck.volumes
    assert ck.meta == {"note": "test"} and freq == tiny.frequencies and vols == tiny.volumes
    assert ck.shapes == tiny.shapes and any(k.startswith("system:") for k in ck.shapes)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    settings = SamplerSettings(levels=3, steps=1)
    crystal = Crystal(221, {"Sr": 1, "Ti": 1, "O": 3}, 3.9, 3.9, 3.9, 90, 90, 90)
    a = ScoreDecoder(model, frequencies=freq, volumes=vols, settings=settings, shapes=ck.shapes).decode(
        crystal, k=2, seed=3, use_lattice_hint=False)
    b = ScoreDecoder.load(tmp_path / "ck", settings=settings).decode(crystal, k=2, seed=3, use_lattice_hint=False)
    assert all(np.array_equal(x.frac_coords, y.frac_coords) for x, y in zip(a, b, strict=True))


def test_orbit_expansion_and_assignments() -> None:
    for sg in (14, 166, 191, 227):
        for site in wyckoff_sites(sg):
            pos = site.expand(np.random.default_rng(0).random(site.dof))
            assert pos.shape == (site.multiplicity, 3)
            # distinct sites for a generic parameter
            diff = (pos[:, None] - pos[None]) % 1.0
            diff = np.minimum(diff, 1 - diff)
            assert np.all(np.linalg.norm(diff, axis=-1)[np.triu_indices(len(pos), 1)] > 1e-6)
    sites = wyckoff_sites(225)
    options = enumerate_assignments(225, {"Na": 4, "Cl": 4})
    assert {tuple(sorted(sites[i].letter for _, i in a)) for a in options} == {("a", "b")}
    for a in enumerate_assignments(62, {"Ca": 4, "Ti": 4, "O": 12}):
        assert sum(sites_62.multiplicity for sites_62 in (wyckoff_sites(62)[i] for _, i in a)) == 20
