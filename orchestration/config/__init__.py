"""Campaign configuration: one YAML file, validated by pydantic.

``load_config(path)`` reads and validates a campaign file; every problem (malformed YAML, an
unknown key, an unknown element, an impossible range) becomes a :class:`ConfigError` whose
message is one paragraph naming the file, the field path and the fix. Nothing is written.

Units: energies in eV/atom, band gap in eV, density in g/cm³, ionic conductivity in S/cm
(log10 where ``log10`` is set), lengths in Å, angles in degrees, time budgets in seconds.
"""

from orchestration.config.loading import format_validation_error, load_config, parse_config
from orchestration.config.runtime import build_search_space, task_runner_for, validate_oracle_settings
from orchestration.config.schema import (
    LATTICE_SYSTEM_GROUPS,
    OPERATIONAL_FIELDS,
    AcquisitionConfig,
    AddressSettings,
    CampaignConfig,
    ConfigError,
    DaskRunner,
    GeneratorConfig,
    LocalClusterSettings,
    LocalRunner,
    OracleConfig,
    ProxyConfig,
    SearchSpaceConfig,
    SeedData,
    SelectionConfig,
    SlurmClusterSettings,
    StoppingConfig,
    SuccessCriterion,
    Target,
    TrackingConfig,
    config_hash,
    stored_reading,
)

__all__ = [
    "LATTICE_SYSTEM_GROUPS", "OPERATIONAL_FIELDS", "AcquisitionConfig", "AddressSettings", "CampaignConfig", "ConfigError",
    "DaskRunner", "GeneratorConfig", "LocalClusterSettings", "LocalRunner", "OracleConfig", "ProxyConfig",
    "SearchSpaceConfig", "SeedData", "SelectionConfig", "SlurmClusterSettings", "StoppingConfig", "SuccessCriterion",
    "Target", "TrackingConfig", "build_search_space", "config_hash", "format_validation_error", "load_config",
    "parse_config", "stored_reading", "task_runner_for", "validate_oracle_settings",
]
