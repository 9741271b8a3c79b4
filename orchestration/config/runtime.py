"""Objects a campaign config asks for at run time: the generator's search space, the oracle's settings, the
task runner."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestration.config.schema import (
    AddressSettings,
    CampaignConfig,
    ConfigError,
    DaskRunner,
    LocalClusterSettings,
    LocalRunner,
)

if TYPE_CHECKING:
    from discovery.gfn import SearchSpace


def validate_oracle_settings(config: CampaignConfig, *, source: str = "the config") -> None:
    """Check ``oracle.name`` and ``oracle.settings`` against the oracle's own settings model
    (:func:`oracles.registry.validate_settings`) without building the oracle; a :class:`ConfigError` names
    the file, each bad ``oracle.settings.<key>`` and the fix. ``matloop run`` calls this before it writes
    anything (store, snapshot, round 0)."""
    from pydantic import ValidationError

    from oracles.registry import UnknownOracleError, available_oracles, settings_model, validate_settings

    name = config.oracle.name
    try:
        validate_settings(name, config.oracle_settings())
    except UnknownOracleError:
        raise ConfigError(f"{source}: `oracle.name: {name}` is not a known oracle; available: "
                          f"{', '.join(available_oracles())}") from None
    except ValidationError as exc:
        model = settings_model(name)
        parts: list[str] = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            path = ".".join(["oracle.settings", *loc])
            if err["type"] == "extra_forbidden":
                hint = ""
                if model is not None and len(loc) == 1:
                    allowed = sorted(model.model_fields)
                    close = difflib.get_close_matches(loc[0], allowed, n=1)
                    hint = (f"did you mean `{close[0]}`? " if close else "") + f"oracle {name!r} accepts: {', '.join(allowed)}"
                parts.append(f"`{path}` is not a setting of oracle {name!r}; remove it" + (f" ({hint})" if hint else ""))
            else:
                got = err.get("input")
                shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
                parts.append(f"`{path}`: {str(err['msg']).removeprefix('Value error, ')}{shown}")
        n = len(parts)
        raise ConfigError(f"{source} is not a valid campaign config ({n} problem{'s' if n > 1 else ''}): "
                          + "; ".join(parts) + ". Fix `oracle.settings` and run again.") from None


def build_search_space(config: CampaignConfig) -> SearchSpace:
    """The generator's ``discovery.gfn.SearchSpace`` for this config.

    The generator validates the space itself (e.g. elements that no allowed space group can host);
    its ``ValueError`` becomes a :class:`ConfigError` naming ``search_space``.
    """
    from discovery.gfn import SearchSpace

    s = config.search_space
    try:
        space = SearchSpace(
            elements=s.elements,
            max_elements=s.max_elements,
            min_elements=s.min_elements,
            max_atoms_per_element=s.max_atoms_per_element,
            max_atoms=s.max_atoms,
            space_groups=s.space_group_numbers(),
            length_range=s.length_range,
            angle_range=s.angle_range,
        )
        if hasattr(space, "check_feasible"):
            space.check_feasible()  # e.g. elements that no allowed space group can host
        return space
    except ValueError as exc:
        text = str(exc).rstrip(".")
        hint = "" if "allow" in text or ";" in text else "; widen the elements, atom limits or space groups"
        raise ConfigError(f"campaign {config.name!r}: `search_space` cannot be used: {text}{hint}.") from None


def task_runner_for(runner: LocalRunner | DaskRunner, *, log_directory: Path | None = None) -> Any:
    """The Prefect task runner the config asks for: a thread pool, or prefect-dask's ``DaskTaskRunner``
    on a ``LocalCluster``, an existing scheduler, or a ``dask_jobqueue.SLURMCluster`` (imported lazily)
    whose job logs go to ``log_directory`` (default: the working directory, SLURM's default)."""
    if isinstance(runner, LocalRunner):
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=runner.max_workers)
    from prefect_dask import DaskTaskRunner

    c = runner.cluster
    if isinstance(c, AddressSettings):
        return DaskTaskRunner(address=c.address)
    if isinstance(c, LocalClusterSettings):
        kwargs: dict[str, Any] = {"n_workers": c.n_workers, "threads_per_worker": c.threads_per_worker,
                                  "processes": True, "host": "127.0.0.1", "dashboard_address": None}
        if c.memory_limit:
            kwargs["memory_limit"] = c.memory_limit
        return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=kwargs)
    import importlib.util

    if importlib.util.find_spec("dask_jobqueue") is None:
        raise ConfigError("`runner.cluster.type: slurm` needs the dask-jobqueue package; install it (pip install dask-jobqueue) "
                          "or use `type: local` / `type: address`.")
    # One single-threaded worker process per core (design §5: torch with 2 threads on a loaded box was
    # 15–36× slower); the job script pins the BLAS/OpenMP pools to one thread too.
    kwargs = {"cores": c.cores, "processes": c.cores, "memory": c.memory, "walltime": c.walltime,
              "job_extra_directives": list(c.job_extra_directives),
              "job_script_prologue": [f"export {v}=1" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")]}
    if log_directory is not None:
        kwargs["log_directory"] = str(log_directory)
    if c.queue:
        kwargs["queue"] = c.queue
    if c.account:
        kwargs["account"] = c.account
    return DaskTaskRunner(cluster_class="dask_jobqueue.SLURMCluster", cluster_kwargs=kwargs,
                          adapt_kwargs={"minimum": 1, "maximum": c.jobs})
