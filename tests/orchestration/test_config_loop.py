"""The learning loop's config sections (orchestration/config/loop.py): validation messages name the field,
defaults leave the config hash unchanged, the top-level decoder reaches the oracle settings."""

from __future__ import annotations

from orchestration.config import parse_config
from orchestration.config.schema import config_hash
from tests.orchestration.test_config import _error
from tests.orchestration.test_config import _minimal as base_config


def _minimal(**over: object) -> dict:
    return base_config(**{"oracle": {"name": "chgnet"}, **over})


def test_defaults_keep_the_hash() -> None:
    plain = config_hash(parse_config(_minimal(), source="c.yaml"))
    explicit = _minimal(novelty={"enabled": False, "known_penalty": 1.0}, sources={"substitution": None},
                        decoder={"name": "pyxtal"}, selection={"across_rounds": False, "skip_tried_formulas": False},
                        proxy={"residual": False}, generator={"retrain": "fine_tune", "offline_replay": False})
    assert config_hash(parse_config(explicit, source="c.yaml")) == plain
    changed = _minimal(sources={"substitution": {"share": 0.3}})
    assert config_hash(parse_config(changed, source="c.yaml")) != plain
    # keys added later at their defaults leave the hash (and the hashed content) as it was
    sub = parse_config(changed, source="c.yaml")
    assert "split_rule" not in sub.science()["sources"]["substitution"] and "max_sd" not in sub.science()["acquisition"]
    explicit_sub = _minimal(sources={"substitution": {"share": 0.3, "split_rule": "proportional", "family_weight": 0}},
                            acquisition={"max_sd": None}, proxy={"residual_family_std": 0.0})
    assert config_hash(parse_config(explicit_sub, source="c.yaml")) == config_hash(sub)
    thompson = _minimal(sources={"substitution": {"share": 0.3, "split_rule": "thompson"}})
    assert config_hash(parse_config(thompson, source="c.yaml")) != config_hash(sub)
    family = _minimal(sources={"substitution": {"share": 0.3, "family_weight": 3.0}})
    assert config_hash(parse_config(family, source="c.yaml")) != config_hash(sub)
    family_std = _minimal(sources={"substitution": {"share": 0.3}}, proxy={"residual": True, "residual_family_std": 0.1})
    residual = _minimal(sources={"substitution": {"share": 0.3}}, proxy={"residual": True})
    assert config_hash(parse_config(family_std, source="c.yaml")) != config_hash(parse_config(residual, source="c.yaml"))
    assert config_hash(parse_config(_minimal(acquisition={"max_sd": 0.5}), source="c.yaml")) != plain


def test_unknown_and_bad_keys_are_named() -> None:
    assert "sources.substitution.shares" in _error(_minimal(sources={"substitution": {"shares": 0.5}}))
    assert "sources.substitution.share" in _error(_minimal(sources={"substitution": {"share": 1.5}}))
    assert "novelty.known_penalty" in _error(_minimal(novelty={"known_penalty": -1}))
    assert "generator.retrain" in _error(_minimal(generator={"retrain": "sometimes"}))
    assert "decoder.name" in _error(_minimal(decoder={"name": "diffusion"}))
    assert "sources.substitution.split_rule" in _error(_minimal(sources={"substitution": {"split_rule": "greedy"}}))
    assert "acquisition.max_sd" in _error(_minimal(acquisition={"max_sd": 0}))
    assert "sources.substitution.family_weight" in _error(_minimal(sources={"substitution": {"family_weight": -1}}))
    assert "proxy.residual_family_std" in _error(_minimal(proxy={"residual_family_std": -0.1}))


def test_cross_field_rules() -> None:
    msg = _error(_minimal(decoder={"name": "score"}, oracle={"name": "chgnet", "settings": {"decoder": {"name": "score"}}}))
    assert "keep one of them" in msg
    msg = _error(_minimal(targets=[{"name": "density", "goal": "maximize"}], sources={"substitution": {}}))
    assert "formation_energy_per_atom" in msg
    assert "only read by the score decoder" in _error(_minimal(decoder={"checkpoint": "x"}))


def test_top_level_decoder_is_merged_into_the_oracle_settings() -> None:
    cfg = parse_config(_minimal(decoder={"name": "score", "use_lattice_hint": False}), source="c.yaml")
    assert cfg.oracle_settings()["decoder"] == {"name": "score", "use_lattice_hint": False}
    assert "decoder" not in parse_config(_minimal(), source="c.yaml").oracle_settings()
