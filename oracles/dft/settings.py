"""Settings of the queued DFT oracles (``gpaw``, and ``dft`` with ``code: qe|vasp``).

They come from a campaign config's ``oracle.settings`` mapping or from ``--option KEY=VALUE`` on the
command line, so the model forbids unknown keys (the error names the field) and every choice is a
``Literal``. Units are in the field names: ``cutoff_eV`` (plane-wave kinetic-energy cutoff, eV),
``kpoint_density`` (k-points per Å⁻¹ of reciprocal-lattice length, 2π included, as ASE's
``kpts={"density": ...}``), ``smearing_width_eV``, ``walltime_s``, ``memory_mb``, ``fmax`` (eV/Å).

Defaults per code (``None`` fields are filled by :meth:`DFTSettings.resolved`):

=====  ===========  ==============  ==========
code   cutoff_eV    kpoint_density  max_scf
=====  ===========  ==============  ==========
gpaw   400          3.0             100
qe     544 (40 Ry)  3.0             100
vasp   520          3.0             100
=====  ===========  ==============  ==========
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from oracles.queue import FailureKind
from oracles.reference import DEFAULT_REFERENCE, ReferenceName

Code = Literal["gpaw", "qe", "vasp"]
SchedulerName = Literal["local", "slurm"]

DEFAULT_CUTOFF_EV: dict[str, float] = {"gpaw": 400.0, "qe": 544.2, "vasp": 520.0}
RY_EV = 13.605693122994


class RetryPolicy(BaseModel):
    """Which failures are resubmitted and how the settings change for the next attempt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(3, ge=1, description="submissions per candidate in all (1 = no retries)")
    retry_on: tuple[FailureKind, ...] = ("timeout", "out_of_memory", "scf_unconverged", "lost")
    walltime_factor: float = Field(2.0, ge=1.0, description="timeout: walltime × this")
    memory_factor: float = Field(2.0, ge=1.0, description="out of memory: memory × this")
    scf_iterations_factor: float = Field(2.0, ge=1.0, description="SCF not converged: max_scf_iterations × this")
    mixing_beta_factor: float = Field(0.5, gt=0.0, le=1.0, description="SCF not converged: mixing_beta × this")


class DFTSettings(BaseModel):
    """Every keyword of ``get_oracle('gpaw' | 'dft', ...)`` (see the module docstring for units)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: Code = "gpaw"
    mode: Literal["relax", "static"] = "static"
    xc: Literal["PBE", "LDA", "PBEsol"] = "PBE"
    cutoff_eV: float | None = Field(None, gt=0, description="plane-wave cutoff, eV (default per code)")
    kpoint_density: float = Field(3.0, gt=0, description="k-points per Å⁻¹ (2π included), as ASE kpts density")
    kpts: tuple[int, int, int] | None = Field(None, description="explicit Monkhorst-Pack grid (overrides the density)")
    gamma_centered: bool = True
    smearing: Literal["fermi-dirac", "gaussian", "marzari-vanderbilt"] = "fermi-dirac"
    smearing_width_eV: float = Field(0.05, ge=0)
    spin: Literal["none", "collinear"] = "none"
    max_scf_iterations: int = Field(100, ge=1)
    mixing_beta: float = Field(0.3, gt=0, le=1, description="density-mixing fraction (GPAW, QE; VASP AMIX)")
    scf_energy_tol_eV: float = Field(1e-5, gt=0, description="SCF energy convergence, eV (per atom for GPAW)")
    fmax: float = Field(0.05, gt=0, description="relax: force convergence, eV/Å")
    relax_steps: int = Field(100, ge=1, description="relax: optimizer step cap")
    relax_cell: bool = True
    # resources
    walltime_s: int = Field(3600, ge=1, description="per job, s (SLURM rounds up to whole minutes)")
    cores: int = Field(1, ge=1, description="CPUs per job; exported as OMP_NUM_THREADS")
    memory_mb: int | None = Field(None, ge=1, description="per job, MB (SLURM --mem; local: RSS watchdog kills above it)")
    # scheduler
    scheduler: SchedulerName = "local"
    max_parallel: int = Field(1, ge=1, description="local: jobs running at once (slot locks)")
    slots_dir: str | None = Field(None, description="local: slot-lock folder shared by every queue of this machine "
                                                    "(default <workdir>/.local-slots)")
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    sbatch_args: tuple[str, ...] = Field((), description="extra sbatch arguments, e.g. ['--constraint=avx2']")
    modules: tuple[str, ...] = Field((), description="`module load` lines in the job script (each quoted)")
    env: dict[str, str] = Field(default_factory=dict, description="exported in the job script (values quoted)")
    setup_script: str | None = Field(None, description="a file sourced by the job script before the run")
    launcher: tuple[str, ...] = Field((), description="prefix of the code's command, e.g. ['srun'] or "
                                                      "['mpirun', '-np', '4']")
    # executables and pseudopotentials (qe, vasp; gpaw uses the venv's Python and gpaw-data setups)
    python: str | None = Field(None, description="gpaw: Python that runs the job (default: this interpreter)")
    qe_command: tuple[str, ...] = ("pw.x",)
    qe_pseudo_dir: str | None = None
    qe_pseudopotentials: dict[str, str] = Field(default_factory=dict, description="element -> UPF file name")
    vasp_command: tuple[str, ...] = ("vasp_std",)
    vasp_potcar_dir: str | None = Field(None, description="folder with <symbol>/POTCAR (PBE_54 layout)")
    # queue and labels
    workdir: str | None = Field(None, description="root of the job folders (default: a new temp folder)")
    poll_interval_s: float = Field(5.0, gt=0)
    retry: RetryPolicy = Field(default_factory=lambda: RetryPolicy.model_validate({}))
    elemental_references: Literal["same-settings", "none"] = Field(
        "same-settings", description="gpaw: formation energy against elemental ground states computed "
                                     "by the job with the same settings (ASE reference structures)")
    reference: ReferenceName = Field(DEFAULT_REFERENCE, description="hull reference of e_above_hull "
                                                                      "(see oracles.reference)")
    mp20_dir: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _retry_shorthand(cls, data: Any) -> Any:
        """``max_attempts=N`` at the top level is accepted as ``retry.max_attempts``."""
        if isinstance(data, dict) and "max_attempts" in data:
            data = dict(data)
            retry = dict(data.get("retry") or {})
            retry["max_attempts"] = data.pop("max_attempts")
            data["retry"] = retry
        return data

    def resolved(self) -> DFTSettings:
        """A copy with per-code defaults filled in (what a job actually uses)."""
        if self.cutoff_eV is not None:
            return self
        return self.model_copy(update={"cutoff_eV": DEFAULT_CUTOFF_EV[self.code]})

    def job_dict(self) -> dict[str, Any]:
        """The settings that change a job's physics or resources (recorded in provenance)."""
        keep = ("code", "mode", "xc", "cutoff_eV", "kpoint_density", "kpts", "gamma_centered", "smearing",
                "smearing_width_eV", "spin", "max_scf_iterations", "mixing_beta", "scf_energy_tol_eV", "fmax",
                "relax_steps", "relax_cell", "walltime_s", "cores", "memory_mb", "elemental_references")
        return self.resolved().model_dump(mode="json", include=set(keep))


class GPAWSettings(DFTSettings):
    """Settings of the ``gpaw`` oracle: :class:`DFTSettings` whose ``code`` can only be ``gpaw``."""

    code: Literal["gpaw"] = "gpaw"  # type: ignore[assignment]
