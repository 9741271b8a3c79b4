"""The campaign config schema (pydantic, unknown keys rejected) and its hash."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from oracles.engines import FORMER_DEFAULT_ENGINE, resolved_engine
from orchestration.config.loop import DecoderChoice, NoveltyConfig, SourcesConfig
from orchestration.errors import UserError
from orchestration.urls import mask_url, url_secret

TargetName = Literal["formation_energy_per_atom", "e_above_hull", "band_gap", "density", "ionic_conductivity"]
Goal = Literal["minimize", "maximize", "target"]
LatticeSystem = Literal[
    "triclinic",
    "monoclinic",
    "orthorhombic",
    "tetragonal",
    "trigonal-rhombohedral",
    "trigonal-hexagonal",
    "hexagonal",
    "cubic",
]

_RHOMBOHEDRAL = (146, 148, 155, 160, 161, 166, 167)
LATTICE_SYSTEM_GROUPS: dict[str, tuple[int, ...]] = {
    "triclinic": tuple(range(1, 3)),
    "monoclinic": tuple(range(3, 16)),
    "orthorhombic": tuple(range(16, 75)),
    "tetragonal": tuple(range(75, 143)),
    "trigonal-rhombohedral": _RHOMBOHEDRAL,
    "trigonal-hexagonal": tuple(g for g in range(143, 168) if g not in _RHOMBOHEDRAL),
    "hexagonal": tuple(range(168, 195)),
    "cubic": tuple(range(195, 231)),
}
# Fields that say where/how a campaign runs, not what it computes: left out of the config hash.
OPERATIONAL_FIELDS = frozenset({"store_url", "tracking", "runner", "campaign_dir"})
OPERATIONAL_ORACLE_FIELDS = frozenset({"wait", "poll_interval_s"})
# Fields added after campaigns were first hashed, with their defaults: left out of the hash at the default so
# that configs which do not set them keep their earlier hash.
HASH_NEUTRAL_DEFAULTS: dict[tuple[str, str], Any] = {
    ("generator", "checkpoint"): None,
    ("acquisition", "relative_to_hull"): None,
    ("proxy", "oracle_weight"): 1.0,
    ("sun", "zero_dimensional"): "exclude",
    ("generator", "volume_prior"): 1.0,
    ("proxy", "residual"): False,
    ("proxy", "residual_family_std"): 0.0,
    ("generator", "retrain"): "fine_tune",
    ("generator", "offline_replay"): False,
    ("selection", "across_rounds"): False,
    ("selection", "skip_tried_formulas"): False,
    ("novelty", "enabled"): False,
    ("novelty", "known_penalty"): 1.0,
    ("novelty", "tried_penalty"): 1.0,
    ("sources", "substitution"): None,
    ("decoder", "name"): "pyxtal",
    ("decoder", "checkpoint"): None,
    ("decoder", "use_lattice_hint"): True,
    ("acquisition", "max_sd"): None,
}
# The same for keys one level deeper: {(section, subsection, key): default}.
HASH_NEUTRAL_NESTED_DEFAULTS: dict[tuple[str, str, str], Any] = {
    ("sources", "substitution", "split_rule"): "proportional",
    ("sources", "substitution", "family_weight"): 0.0,
}

# Sections added after campaigns were first hashed: left out of the hash when every key is at its default.
NEW_SECTIONS = frozenset({"sun", "novelty", "sources", "decoder"})
# Oracle settings whose default changed after campaigns were first hashed: {oracle: {key: former default}}.
# A config that leaves such a key out is hashed with the current default written in (it must not share a hash
# with a campaign stored when leaving it out meant the former default); a campaign stored then is resumed with
# the former default written in (see stored_reading). The CHGNet engine was "ase" until 2026-12-05.
CHANGED_ORACLE_DEFAULTS: dict[str, dict[str, Any]] = {"chgnet": {"engine": FORMER_DEFAULT_ENGINE}}


class ConfigError(UserError):
    """A campaign config that cannot be used; the message names the field and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Strict):
    """One property to optimise; several targets are combined as a weighted sum of their rewards."""

    name: TargetName
    goal: Goal = "minimize"
    value: float | None = Field(default=None, description="desired value when goal is 'target'")
    weight: float = Field(default=1.0, gt=0)
    source: Literal["oracle", "seed_proxy"] = Field(
        default="oracle",
        description="'oracle': labelled by the oracle each round; 'seed_proxy': predicted by a proxy fit once on the seed data",
    )

    @model_validator(mode="after")
    def _value_matches_goal(self) -> Target:
        if self.goal == "target" and self.value is None:
            raise ValueError(f"target {self.name!r} has goal 'target' but no value; add e.g. `value: 1.34`")
        if self.goal != "target" and self.value is not None:
            raise ValueError(f"target {self.name!r} has a value but goal {self.goal!r}; set `goal: target` or remove `value`")
        return self


class SearchSpaceConfig(_Strict):
    elements: tuple[str, ...] = Field(min_length=1)
    min_elements: int = Field(default=2, ge=1)
    max_elements: int = Field(default=5, ge=1)
    max_atoms_per_element: int = Field(default=16, ge=1)
    max_atoms: int = Field(default=80, ge=1)
    space_groups: tuple[int | LatticeSystem, ...] | None = Field(
        default=None, description="space-group numbers 1–230 and/or crystal-lattice system names; null = all"
    )
    length_range: tuple[float, float] = (0.9, 100.0)
    angle_range: tuple[float, float] = (50.0, 150.0)

    @field_validator("elements")
    @classmethod
    def _known_elements(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from pymatgen.core.periodic_table import Element

        unknown = [e for e in value if not Element.is_valid_symbol(e)]
        if unknown:
            raise ValueError(
                f"{', '.join(map(repr, unknown))} is not a chemical element symbol; use symbols from the periodic table "
                "with the usual capitalisation, e.g. 'Li', 'O', 'Cl'"
            )
        if len(set(value)) != len(value):
            raise ValueError("an element is listed twice; list each element once")
        return value

    @field_validator("space_groups")
    @classmethod
    def _groups_in_range(cls, value: tuple[int | str, ...] | None) -> tuple[int | str, ...] | None:
        if value is None:
            return None
        bad = [g for g in value if isinstance(g, int) and not 1 <= g <= 230]
        if bad:
            raise ValueError(f"space group(s) {bad} outside 1–230; use international numbers 1–230 or lattice-system names")
        if not value:
            raise ValueError("empty list of space groups; remove the key to allow all 230")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SearchSpaceConfig:
        n = len(self.elements)
        if self.min_elements > self.max_elements:
            raise ValueError(f"min_elements ({self.min_elements}) > max_elements ({self.max_elements}); lower min_elements")
        if self.min_elements > n:
            raise ValueError(f"min_elements ({self.min_elements}) exceeds the {n} listed elements; add elements or lower min_elements")
        if self.max_atoms < self.min_elements:
            raise ValueError(f"max_atoms ({self.max_atoms}) cannot hold min_elements ({self.min_elements}) distinct elements; raise max_atoms")
        for label, (lo, hi), bounds in (("length_range", self.length_range, (0.0, 1000.0)), ("angle_range", self.angle_range, (0.0, 180.0))):
            if not bounds[0] < lo < hi <= bounds[1]:
                raise ValueError(f"{label} {[lo, hi]} must satisfy {bounds[0]} < low < high <= {bounds[1]}; fix the two numbers")
        return self

    def space_group_numbers(self) -> tuple[int, ...] | None:
        """The allowed space groups as sorted numbers (lattice-system names expanded), or None for all."""
        if self.space_groups is None:
            return None
        out: set[int] = set()
        for g in self.space_groups:
            out.update(LATTICE_SYSTEM_GROUPS[g] if isinstance(g, str) else (g,))
        return tuple(sorted(out))


class SeedData(_Strict):
    """Labelled data the first proxy is fit on: a dataset name known to ``discovery.datasets`` or a crystal table."""

    dataset: str | None = None
    path: Path | None = None
    max_rows: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> SeedData:
        if (self.dataset is None) == (self.path is None):
            raise ValueError("give exactly one of `dataset` (a dataset name) or `path` (a crystal table with labels)")
        return self


class ProxyConfig(_Strict):
    model: Literal["ensemble"] = "ensemble"
    members: int = Field(default=5, ge=1)
    hidden: int = Field(default=256, ge=1)
    layers: int = Field(default=3, ge=1)
    epochs: int = Field(default=100, ge=1)
    learning_rate: float = Field(default=1.5e-3, gt=0)
    batch_size: int = Field(default=256, ge=1)
    validation_fraction: float = Field(default=0.1, ge=0, lt=1)
    warm_start: bool = True
    oracle_weight: float = Field(default=1.0, ge=1, description=(
        "how much each oracle label counts against a seed-data row in the proxy refit (weighted bootstrap); "
        "above 1, a round's results move the next round's reward even when the seed data is large"))
    residual: bool = Field(default=False, description=(
        "add a Gaussian-process residual model fitted on the campaign's own oracle labels only (prediction = "
        "ensemble + residual; σ recalibrated on those labels): the region the loop explores is learned from its "
        "labels even when thousands of seed rows dominate the ensemble fit"))
    residual_family_std: float = Field(default=0.0, ge=0, le=5, description=(
        "with `residual`: prior median (the target's units, e.g. eV/atom) of an offset the residual model shares "
        "between the crystals of one substitution family (the seed structure they descend from), fitted with its "
        "other hyper-parameters; a labelled sibling then corrects the rest of its family. 0 = no family term"))


class AcquisitionConfig(_Strict):
    kind: Literal["greedy", "ucb", "ei"] = "ucb"
    kappa: float = Field(default=1.0, ge=0, description="UCB exploration weight (standard deviations)")
    temperature: float = Field(default=1.0, gt=0, description="reward = exp(acquisition / temperature)")
    xi: float = Field(default=0.0, ge=0, description="EI improvement margin")
    max_sd: float | None = Field(default=None, gt=0, description=(
        "cap on the proxy's σ (the target's units, e.g. eV/atom) inside the acquisition (ucb, target_value, ei; "
        "the generator's reward and the batch ranking alike): far from its data the ensemble's σ grows without "
        "bound by design, and an uncapped UCB bonus then ranks an implausible cell first (a K2NiP cell at "
        "6.1 Å³/atom, predicted +7.0 ± 8.2 eV/atom, topped a round of the S.U.N. benchmark). None: no cap"))
    relative_to_hull: Literal["mp20+li-fe-o", "mp20+matbench", "li-fe-o"] | None = Field(default=None, description=(
        "score the formation_energy_per_atom target by its predicted distance to this reference hull, "
        "μ − E_hull(composition), instead of μ: the generator then seeks compositions predicted to beat the known "
        "phases rather than the lowest formation energies (greedy or ucb only)"))


class GeneratorConfig(_Strict):
    iterations_first_round: int = Field(default=2000, ge=0)
    iterations_per_round: int = Field(default=500, ge=0, description="fine-tuning iterations in later rounds (warm start)")
    retrain: Literal["fine_tune", "fresh"] = Field(default="fine_tune", description=(
        "later rounds: 'fine_tune' the previous round's generator for iterations_per_round iterations, or train "
        "a 'fresh' one (same hyperparameters) for iterations_first_round iterations on the new reward"))
    offline_replay: bool = Field(default=False, description=(
        "replay the campaign's labelled candidates (converged oracle results) as offline trajectories while training"))
    device: Literal["cpu", "cuda"] = "cpu"
    hyper: dict[str, float | int | str | bool] = Field(default_factory=dict, description="passed to CrystalGFN(**hyper)")
    volume_prior: float = Field(default=1.0, ge=0, description=(
        "weight of the lattice prior's volume likelihood in the generator's reward (Student-t on the z-score of "
        "ln(volume per atom) against the composition's predicted equilibrium volume); 0 turns it off"))
    checkpoint: str | None = Field(default=None, description=(
        "start round 0 from this trained Crystal-GFN (a `matloop gfn train --out` directory, e.g. the shipped "
        "discovery/data/checkpoints/crystal-gfn-fe) and fine-tune it for iterations_first_round iterations on the "
        "campaign's reward; its search space must equal search_space. Relative paths are looked up in the working "
        "directory, then in the matloop source tree"))

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value: str | None) -> str | None:
        if value is not None:
            path = resolve_checkpoint(value)
            if not (path / "config.json").is_file() or not (path / "model.pt").is_file():
                raise ValueError(f"no Crystal-GFN checkpoint at {value!r} (looked in {Path.cwd()} and {_SOURCE_ROOT}); "
                                 "give a directory written by `matloop gfn train --out DIR`, or remove the key")
        return value


_SOURCE_ROOT = Path(__file__).resolve().parents[2]  # holds discovery/, oracles/, orchestration/


def resolve_checkpoint(value: str) -> Path:
    """A generator checkpoint path: absolute, or relative to the working directory, else to the source tree."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path.resolve()
    return (_SOURCE_ROOT / path).resolve()


class SelectionConfig(_Strict):
    method: Literal["mmr", "k_center", "greedy"] = "mmr"
    diversity: float = Field(default=0.5, ge=0, le=1, description="0 = pure score, 1 = pure diversity")
    across_rounds: bool = Field(default=False, description=(
        "measure a candidate's diversity against the earlier rounds' batches too (not only this round's)"))
    skip_tried_formulas: bool = Field(default=False, description=(
        "drop candidates whose reduced formula an earlier round already sent to the oracle; substitution "
        "structures are also matched (StructureMatcher) against every relaxed result of their formula"))


class OracleConfig(_Strict):
    name: str = Field(min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)
    retries: int = Field(default=2, ge=0)
    retry_delay_s: float = Field(default=5.0, ge=0)
    timeout_s: float | None = Field(default=None, gt=0)
    wait: bool = Field(default=True, description="queued oracles (DFT): wait for the jobs in this run; false: "
                       "submit, record and stop (`matloop resume` collects the finished jobs later)")
    poll_interval_s: float = Field(default=30.0, gt=0, description="queued oracles: seconds between scheduler polls")


class StoppingConfig(_Strict):
    max_oracle_calls: int | None = Field(default=None, ge=1)
    target_hits: int | None = Field(default=None, ge=1, description="stop once this many unique hits are found")
    patience_rounds: int | None = Field(default=None, ge=1, description="stop after this many rounds without a better best value")


class SuccessCriterion(_Strict):
    """A candidate is a hit when ``metric`` is within [at_least, at_most]; default E_hull ≤ 0.1 eV/atom."""

    metric: TargetName = "e_above_hull"
    at_most: float | None = None
    at_least: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_bound(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("at_most") is None and data.get("at_least") is None:
            if data.get("metric", "e_above_hull") != "e_above_hull":
                raise ValueError("give `at_most` and/or `at_least` for the success metric")
            data = {**data, "at_most": 0.1}
        return data

    def is_hit(self, targets: Mapping[str, float | None], *, status: str) -> bool:
        """True when the result's ``status`` is ``ok`` and ``metric`` is within the bounds
        (:func:`discovery.sun.is_hit`: an ``unconverged`` or failed result is never a hit)."""
        from discovery.sun import is_hit

        v = targets.get(self.metric)
        return is_hit(status, None if v is None else float(v), at_most=self.at_most, at_least=self.at_least)


class SunConfig(_Strict):
    """S.U.N. labels (stable, unique, novel; see :mod:`discovery.sun`): stability uses the success bound on
    ``e_above_hull`` (else 0.1 eV/atom)."""

    zero_dimensional: Literal["exclude", "include"] = Field(default="exclude", description=(
        "'exclude': a packing of isolated molecules (dimensionality 0) is never S.U.N. (its hits are counted "
        "apart, as zero_dimensional_hits); 'include': dimensionality does not matter"))


class TrackingConfig(_Strict):
    enabled: bool = True
    uri: str | None = Field(default=None, description=(
        "MLflow tracking URI; default $MLFLOW_TRACKING_URI, else the project's shared SQLite store (see `shared`)"))
    shared: bool = Field(default=True, description=(
        "without a uri: true = one store for every campaign of the project, mlflow.db next to the campaign "
        "directories (runs/mlflow.db); false = mlflow.db inside the campaign directory. A campaign directory that "
        "already has its own mlflow.db keeps using it"))
    experiment: str | None = Field(default=None, description="default: matloop/<campaign name>")
    register_models: bool = True


class LocalClusterSettings(_Strict):
    type: Literal["local"] = "local"
    n_workers: int = Field(default=2, ge=1)
    threads_per_worker: int = Field(default=1, ge=1)
    memory_limit: str | None = None


class AddressSettings(_Strict):
    type: Literal["address"] = "address"
    address: str = Field(min_length=1, description="scheduler address, e.g. tcp://127.0.0.1:8786")


class SlurmClusterSettings(_Strict):
    type: Literal["slurm"] = "slurm"
    queue: str | None = None
    account: str | None = None
    cores: int = Field(default=1, ge=1)
    memory: str = "4GB"
    walltime: str = "01:00:00"
    jobs: int = Field(default=1, ge=1)
    job_extra_directives: tuple[str, ...] = ()


class LocalRunner(_Strict):
    kind: Literal["local"] = "local"
    max_workers: int = Field(default=1, ge=1, description="concurrent oracle tasks (threads)")


class DaskRunner(_Strict):
    kind: Literal["dask"] = "dask"
    cluster: Annotated[LocalClusterSettings | AddressSettings | SlurmClusterSettings, Field(discriminator="type")] = Field(
        default_factory=LocalClusterSettings
    )

    @field_validator("cluster", mode="before")
    @classmethod
    def _default_cluster_type(cls, value: Any) -> Any:
        return {"type": "local", **value} if isinstance(value, dict) and "type" not in value else value


class CampaignConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="letters, digits, _ . - (≤ 64)")
    description: str = ""
    seed: int = Field(default=0, ge=0)
    targets: tuple[Target, ...] = Field(min_length=1)
    search_space: SearchSpaceConfig
    seed_data: SeedData
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    acquisition: AcquisitionConfig = Field(default_factory=AcquisitionConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    candidates_per_round: int = Field(ge=1, description="N crystals sampled from the generator per round")
    batch_size: int = Field(ge=1, description="B candidates sent to the oracle per round")
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    oracle: OracleConfig
    rounds: int = Field(ge=1)
    stopping: StoppingConfig = Field(default_factory=StoppingConfig)
    success: SuccessCriterion = Field(default_factory=SuccessCriterion)
    sun: SunConfig = Field(default_factory=SunConfig)
    novelty: NoveltyConfig = Field(default_factory=NoveltyConfig)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    decoder: DecoderChoice = Field(default_factory=DecoderChoice, description=(
        "how the oracle decodes crystal-table rows; merged into oracle.settings.decoder (which must not also be set)"))
    campaign_dir: Path | None = Field(default=None, description="default: runs/<name>")
    store_url: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite:///<campaign_dir>/store.db")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    runner: Annotated[LocalRunner | DaskRunner, Field(discriminator="kind")] = Field(default_factory=LocalRunner)

    @field_validator("runner", mode="before")
    @classmethod
    def _default_runner_kind(cls, value: Any) -> Any:
        return {"kind": "local", **value} if isinstance(value, dict) and "kind" not in value else value

    @model_validator(mode="after")
    def _consistent(self) -> CampaignConfig:
        if self.batch_size > self.candidates_per_round:
            raise ValueError(
                f"batch_size ({self.batch_size}) exceeds candidates_per_round ({self.candidates_per_round}); "
                "sample at least as many candidates as the oracle batch"
            )
        for label, url in (("store_url", self.store_url), ("tracking.uri", self.tracking.uri)):
            secret = url_secret(url)
            if secret:
                raise ValueError(
                    f"{label} contains {secret} ({mask_url(url)}); remove it from the file and pass it in the "
                    "environment (PGPASSWORD for PostgreSQL, MLFLOW_TRACKING_PASSWORD for MLflow)"
                )
        if self.decoder != DecoderChoice() and "decoder" in self.oracle.settings:
            raise ValueError("the decoder is set both at the top level (`decoder:`) and in `oracle.settings.decoder`; "
                             "keep one of them")
        if self.sources.substitution is not None and not any(
                t.name == "formation_energy_per_atom" for t in self.targets):
            raise ValueError("sources.substitution ranks structures with the formation-energy proxy; add a "
                             "`formation_energy_per_atom` target or remove sources.substitution")
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError("a target is listed twice; list each target once")
        if self.acquisition.relative_to_hull is not None:
            fe = [t for t in self.targets if t.name == "formation_energy_per_atom"]
            if not fe or fe[0].goal != "minimize":
                raise ValueError("acquisition.relative_to_hull needs a `formation_energy_per_atom` target with goal "
                                 "'minimize'; add that target or remove relative_to_hull")
            if self.acquisition.kind == "ei":
                raise ValueError("acquisition.relative_to_hull works with kind 'greedy' or 'ucb', not 'ei'; "
                                 "change acquisition.kind or remove relative_to_hull")
        return self

    # -- resolved locations -------------------------------------------------------------------
    def resolved_dir(self) -> Path:
        return (self.campaign_dir or Path("runs") / self.name).resolve()

    def resolved_store_url(self) -> str:
        """``store_url``, else ``$MATLOOP_STORE_URL``, else SQLite in the campaign dir."""
        return self.store_url or os.environ.get("MATLOOP_STORE_URL") or f"sqlite:///{self.resolved_dir() / 'store.db'}"

    def resolved_tracking_uri(self) -> str:
        """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite: the campaign dir's own ``mlflow.db``
        when it has one (campaigns made before the shared store) or ``tracking.shared`` is false, else the
        project's store shared by all campaigns, ``mlflow.db`` next to the campaign dirs (``runs/mlflow.db``)."""
        explicit = self.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
        if explicit:
            return explicit
        own = self.resolved_dir() / "mlflow.db"
        db = own if own.exists() or not self.tracking.shared else self.resolved_dir().parent / "mlflow.db"
        return f"sqlite:///{db}"

    def oracle_settings(self) -> dict[str, Any]:
        """``oracle.settings`` with the top-level ``decoder`` merged in (when it is not the default)."""
        if self.decoder == DecoderChoice():
            return dict(self.oracle.settings)
        return {**self.oracle.settings, "decoder": self.decoder.model_dump(mode="json", exclude_defaults=True)}

    def experiment_name(self) -> str:
        return self.tracking.experiment or f"matloop/{self.name}"

    def science(self) -> dict[str, Any]:
        """The config without operational fields (store, tracking, runner, directory; whether and how often to
        wait for queued oracle jobs), as JSON data; an oracle setting whose default changed
        (:data:`CHANGED_ORACLE_DEFAULTS`) and that the config leaves out is written in at its current default."""
        return self._science(current_defaults=True)

    def former_reading(self) -> CampaignConfig | None:
        """This config as it read before an oracle default changed (:data:`CHANGED_ORACLE_DEFAULTS`): the
        former defaults written into ``oracle.settings`` where it leaves them out (or sets them to the former
        value); ``None`` when no changed default applies (another oracle, or the setting given otherwise)."""
        former = CHANGED_ORACLE_DEFAULTS.get(self.oracle.name, {})
        pinned = {k: v for k, v in former.items() if self.oracle.settings.get(k) in (None, v)}
        if not pinned:
            return None
        oracle = self.oracle.model_copy(update={"settings": {**self.oracle.settings, **pinned}})
        return self.model_copy(update={"oracle": oracle})

    def _science(self, *, current_defaults: bool) -> dict[str, Any]:
        exclude: dict[str, Any] = {f: True for f in OPERATIONAL_FIELDS}
        exclude["oracle"] = set(OPERATIONAL_ORACLE_FIELDS)
        data = self.model_dump(mode="json", exclude=exclude)
        settings = data["oracle"]["settings"]
        if current_defaults:
            settings.update(_changed_defaults(self.oracle.name, self.oracle.settings))
        else:  # the former reading: a changed default at its former value was left out of the hash
            for key, value in CHANGED_ORACLE_DEFAULTS.get(self.oracle.name, {}).items():
                if settings.get(key) in (None, value):
                    settings.pop(key, None)
        for (section, key), default in HASH_NEUTRAL_DEFAULTS.items():
            if section in data and key in data[section] and data[section][key] == default:
                del data[section][key]
        for (section, sub, key), default in HASH_NEUTRAL_NESTED_DEFAULTS.items():
            inner = (data.get(section) or {}).get(sub)
            if isinstance(inner, dict) and key in inner and inner[key] == default:
                del inner[key]
        for section in NEW_SECTIONS:  # a section added later, all defaults
            if section in data and not data[section]:
                del data[section]
        return data


def config_hash(config: CampaignConfig) -> str:
    """SHA-256 (first 16 hex digits) of the config's scientific content; unchanged by where it runs."""
    return _hash(config.science())


def _hash(science: dict[str, Any]) -> str:
    text = json.dumps(science, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _changed_defaults(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of :data:`CHANGED_ORACLE_DEFAULTS` that ``settings`` leave out, at their current default
    where it differs from the former one (a CHGNet relaxation without ``engine``: ``batched``, unless it asks
    for an ASE-only optimizer)."""
    if name != "chgnet" or settings.get("engine") is not None or settings.get("mode", "relax") != "relax":
        return {}
    engine = resolved_engine(settings)
    return {} if engine == CHANGED_ORACLE_DEFAULTS[name]["engine"] else {"engine": engine}


def stored_reading(config: CampaignConfig, stored_hash: str | None) -> tuple[CampaignConfig, str]:
    """The config as the stored campaign with ``stored_hash`` (``None``: none stored yet) reads it, and the hash
    to check against the store.

    ``(config, config_hash(config))``, except for a campaign stored before an oracle default changed
    (:data:`CHANGED_ORACLE_DEFAULTS`) by a config that leaves that setting out (or sets it to the former
    default): its stored hash is the config's hash without the setting, and it comes back with the former
    default written in, so that resuming neither fails nor silently switches it (a CHGNet campaign started
    on the ASE engine resumes on the ASE engine). A config that sets the new default explicitly is a change."""
    current = config_hash(config)
    if stored_hash is None or stored_hash == current:
        return config, current
    former = config.former_reading()
    if former is not None and _hash(config._science(current_defaults=False)) == stored_hash:
        return former, stored_hash
    return config, current
