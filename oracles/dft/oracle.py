"""Queued DFT oracles: ``gpaw`` (runs here, offline) and ``dft`` with ``code: gpaw | qe | vasp``.

Each candidate becomes a job folder (see :mod:`oracles.dft.jobfiles`) submitted through a scheduler
adapter (``local`` or ``slurm``, see :mod:`oracles.dft.schedulers`); :func:`oracles.queue.drive`
submits, polls, collects and retries. ``evaluate`` drives a batch to the end with a file ledger under
``workdir`` (default: a new temporary folder per oracle object).

Targets (per atom; energies in eV/atom):

* ``energy_per_atom``: the code's raw total energy / N. **Not on the Materials Project scale**: GPAW's
  zero is the isolated reference atoms of its PAW setups, QE's depends on the pseudopotentials.
* ``formation_energy_per_atom``: GPAW — against elemental ground states computed by the same job with
  the same settings (ASE's reference crystal structure of each element, k-points from
  ``kpoint_density``; for elements whose standard state is a diatomic gas — H, N, O, F, Cl, ... — the
  molecule in a 9 Å box at the Γ point, O₂ spin-polarised; relaxed in relax mode),
  ``E_form = (E − Σ n_i μ_i^GPAW) / N``; ``None`` when an element has no reference state in ASE or with
  ``elemental_references: none``. Plain PBE: no correction of the O₂ overbinding (MP2020 corrects it).
  VASP — MP2020-corrected against MP's elemental references (the MP input sets make it comparable).
  QE — not computed (``None``).
* ``e_above_hull``: the formation energy above against the MP-scale reference hull of
  :mod:`oracles.reference` (``reference`` setting). For GPAW this mixes a PBE/PAW-setup formation
  energy with MP's GGA(+U)/MP2020 hull: a systematic offset of order 0.05-0.1 eV/atom is expected (more
  for oxides, where MP applies anion corrections); ``provenance["formation_energy_reference"]`` and
  ``["hull_reference"]`` say what each number is relative to.
* ``density`` (g/cm³), ``volume_per_atom`` (Å³/atom) of the final structure.

Sanity gates (:mod:`oracles.sanity`, neighbour cutoff 6 Å, volume-per-atom bounds): a structure that
fails them is ``invalid`` without a job being submitted, and a job's final structure that fails them
is ``invalid`` (no targets). Every result's provenance records the gates (``sanity_gates``) and the
hull reference (``reference``; the full :meth:`~oracles.reference.HullReference.provenance` under
``hull_reference`` when ``e_above_hull`` was computed).

Failures (``provenance["failure"]``, see :data:`oracles.queue.FailureKind`): ``timeout`` → status
``timeout``; ``scf_unconverged`` → ``unconverged``; every other failure → ``failed``. A relaxation
that hits ``relax_steps`` is ``unconverged`` with targets and no ``failure`` (not retried).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel
from pymatgen.core import Structure

from oracles.base import (
    Candidate,
    OracleResult,
    ProgressCallback,
    Status,
    failed,
    library_versions,
    structure_to_cif,
)
from oracles.decode import DecodeError, decode_crystal
from oracles.dft.codes import CodeOutput, InputError, kpoint_grid, parse_outputs, write_inputs
from oracles.dft.jobfiles import job_script, read_job_status, read_json, write_json_atomic, write_text_atomic
from oracles.dft.schedulers import Scheduler, SchedulerError, get_scheduler
from oracles.dft.settings import DFTSettings, GPAWSettings
from oracles.queue import FailureKind, FileLedger, JobHandle, JobState, drive
from oracles.sanity import Gates, check_structure, gate_message

ORACLE_VERSION = "1"
NO_JOB = "none"
FAILURE_STATUS: dict[str, Status] = {"timeout": "timeout", "scf_unconverged": "unconverged"}
GATES = Gates(cutoff_source="DFT oracles: no atom of a solid is 6 Å from its nearest neighbour")


class DFTOracle:
    """A queued DFT oracle (see the module docstring); settings: :class:`oracles.dft.settings.DFTSettings`.

    Example::

        oracle = DFTOracle(code="gpaw", cutoff_eV=300, kpoint_density=2.0, scheduler="local", max_parallel=2)
        results = oracle.evaluate([Candidate.from_structure(s, id="si")], seed=0)
    """

    settings_model: ClassVar[type[BaseModel]] = DFTSettings

    def __init__(self, **settings: Any) -> None:
        self.settings = DFTSettings(**settings)
        self.name: str = self.settings.code
        self.max_attempts: int = self.settings.retry.max_attempts
        self._root = Path(self.settings.workdir).resolve() if self.settings.workdir else None

    @property
    def root(self) -> Path:
        """Where ``evaluate`` keeps job folders and its ledger."""
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix=f"matloop-{self.name}-"))
        return self._root

    def _scheduler(self, name: str, root: Path) -> Scheduler:
        return get_scheduler(self.settings.model_copy(update={"scheduler": name}), root=root)

    # -- Oracle ---------------------------------------------------------------------------------
    def evaluate(self, candidates: Sequence[Candidate], *, seed: int = 0,
                 progress: ProgressCallback | None = None) -> list[OracleResult]:
        """Submit every candidate, wait for the jobs, collect (retrying failures); results in input order."""
        if not candidates:
            return []
        ledger = FileLedger(self.root / "ledger")
        finals = drive(self, candidates, root=self.root, ledger=ledger, seed=seed, wait=True,
                       poll_interval_s=self.settings.poll_interval_s, progress=progress)
        return [finals[c.id] for c in candidates]

    # -- QueuedOracle ---------------------------------------------------------------------------
    def settings_for(self, previous: OracleResult | None) -> DFTSettings:
        """The settings of the next attempt: the previous attempt's, adjusted for how it failed."""
        if previous is None:
            return self.settings
        used = previous.provenance.get("settings") or {}
        keys = ("walltime_s", "memory_mb", "max_scf_iterations", "mixing_beta")
        s = self.settings.model_copy(update={k: used[k] for k in keys if k in used})
        policy = self.settings.retry
        kind = previous.provenance.get("failure")
        if kind == "timeout":
            return s.model_copy(update={"walltime_s": int(s.walltime_s * policy.walltime_factor)})
        if kind == "out_of_memory" and s.memory_mb:
            return s.model_copy(update={"memory_mb": int(s.memory_mb * policy.memory_factor)})
        if kind == "scf_unconverged":
            return s.model_copy(update={"max_scf_iterations": int(s.max_scf_iterations * policy.scf_iterations_factor),
                                        "mixing_beta": s.mixing_beta * policy.mixing_beta_factor})
        return s

    def should_retry(self, result: OracleResult, *, attempt: int) -> bool:
        kind = result.provenance.get("failure")
        return kind is not None and kind in self.settings.retry.retry_on and attempt + 1 < self.max_attempts

    def submit(self, candidate: Candidate, *, seed: int, workdir: Path, attempt: int = 0,
               previous: OracleResult | None = None) -> JobHandle:
        """Write the job folder and submit it (see :mod:`oracles.dft.jobfiles` for its files).

        A candidate that cannot become a job (undecodable crystal, missing pseudopotential, refused by
        the scheduler) gets a folder holding its failed result and a handle with job id ``none``.
        """
        jobdir = Path(workdir).resolve()
        existing = self.find(candidate, workdir=jobdir, attempt=attempt)
        if existing is not None:
            return existing
        if jobdir.exists():  # written, never submitted: start over
            shutil.rmtree(jobdir)
        jobdir.mkdir(parents=True)
        settings = self.settings_for(previous)
        token = f"matloop-{uuid.uuid4().hex[:12]}"
        meta: dict[str, Any] = {"candidate_id": candidate.id, "attempt": attempt, "seed": seed, "code": settings.code,
                                "scheduler": settings.scheduler, "token": token, "oracle": self.name,
                                "created_at": time.time()}
        write_json_atomic(jobdir / "settings.json", settings.model_dump(mode="json"))
        try:
            structure, info = self._structure(candidate, seed)
        except DecodeError as exc:
            status: Status = "invalid" if exc.impossible else "failed"
            return self._no_job(candidate, jobdir, meta, failed(candidate.id, status, f"decoding failed: {exc}"))
        meta["input"] = info
        refused = check_structure(structure, gates=GATES)
        if refused is not None:
            result = failed(candidate.id, "invalid", gate_message("input", refused),
                            structure_cif=structure_to_cif(structure))
            return self._no_job(candidate, jobdir, meta, result)
        try:
            (jobdir / "structure.cif").write_text(structure_to_cif(structure))
            command = write_inputs(jobdir, structure, settings, reference_dir=self._reference_dir(jobdir, settings))
            title = f"matloop {self.name}: candidate {candidate.id!r}, attempt {attempt}"
            write_text_atomic(jobdir / "job.sh", job_script(jobdir, command, settings, title=title))
            meta["kpoints"] = list(kpoint_grid(structure, settings.resolved()))
        except (InputError, ValueError) as exc:
            return self._no_job(candidate, jobdir, meta, self._failure(candidate.id, "input_error", str(exc)))
        write_json_atomic(jobdir / "meta.json", meta)
        scheduler = self._scheduler(settings.scheduler, jobdir.parent.parent)
        try:
            job_id = scheduler.submit(jobdir, settings=settings, token=token)
        except SchedulerError as exc:
            return self._no_job(candidate, jobdir, meta, self._failure(candidate.id, "submit_error", str(exc)))
        write_text_atomic(jobdir / "jobid", job_id + "\n")
        return JobHandle(candidate.id, attempt, job_id, scheduler.name, str(jobdir))

    def find(self, candidate: Candidate, *, workdir: Path, attempt: int = 0) -> JobHandle | None:
        jobdir = Path(workdir).resolve()
        meta = read_json(jobdir / "meta.json")
        if not meta or meta.get("candidate_id") != candidate.id or meta.get("attempt") != attempt:
            return None
        if (jobdir / "failed.json").exists():
            return JobHandle(candidate.id, attempt, NO_JOB, NO_JOB, str(jobdir))
        try:
            job_id = (jobdir / "jobid").read_text().strip()
        except OSError:
            job_id = ""
        if not job_id and meta.get("token"):  # killed between submitting and writing the id
            job_id = self._scheduler(meta["scheduler"], jobdir.parent.parent).find_token(meta["token"]) or ""
            if job_id:
                write_text_atomic(jobdir / "jobid", job_id + "\n")
        return JobHandle(candidate.id, attempt, job_id, meta["scheduler"], str(jobdir)) if job_id else None

    def poll(self, handles: Sequence[JobHandle]) -> list[JobState]:
        out: list[JobState] = ["finished"] * len(handles)
        by_scheduler: dict[str, list[int]] = {}
        for i, h in enumerate(handles):
            if h.scheduler != NO_JOB:
                by_scheduler.setdefault(h.scheduler, []).append(i)
        for name, idx in by_scheduler.items():
            jobs = [(handles[i].job_id, Path(handles[i].workdir)) for i in idx]
            states = self._scheduler(name, Path(jobs[0][1]).parent.parent).states(jobs)
            for i, st in zip(idx, states, strict=True):
                out[i] = st
        return out

    def collect(self, handle: JobHandle) -> OracleResult:
        jobdir = Path(handle.workdir)
        if handle.scheduler == NO_JOB:
            return OracleResult.from_json((jobdir / "failed.json").read_text())
        meta = read_json(jobdir / "meta.json") or {}
        settings = DFTSettings(**(read_json(jobdir / "settings.json") or {}))
        job = read_job_status(jobdir)
        end = self._scheduler(handle.scheduler, jobdir.parent.parent).end_state(handle.job_id, jobdir)
        try:
            out = parse_outputs(jobdir, settings.code)
        except Exception as exc:
            out = CodeOutput("error", f"parsing failed: {type(exc).__name__}: {exc}")
            out.info["parse_exception"] = True
        kind, message = _classify(out, job, end, settings, jobdir)
        prov: dict[str, Any] = {"oracle": self.name, "oracle_version": ORACLE_VERSION, "code": settings.code,
                                "settings": settings.job_dict(), "scheduler": handle.scheduler,
                                "job_id": handle.job_id, "attempt": handle.attempt, "job_dir": str(jobdir),
                                "scheduler_state": end, "exit_code": job.exit_code, "seed": meta.get("seed"),
                                "kpoints": meta.get("kpoints"), **(meta.get("input") or {}), **out.info,
                                "reference": settings.reference, "sanity_gates": GATES.provenance(),
                                **library_versions()}
        wall = job.elapsed_s or 0.0
        if kind is not None:
            prov["failure"] = kind
            return OracleResult(candidate_id=handle.candidate_id, status=FAILURE_STATUS.get(kind, "failed"),
                                message=message, wall_time_s=wall, provenance=prov)
        assert out.structure is not None and out.energy_eV is not None
        refused = check_structure(out.structure, gates=GATES)
        if refused is not None:
            return OracleResult(candidate_id=handle.candidate_id, status="invalid",
                                message=gate_message("result", refused), structure_cif=structure_to_cif(out.structure),
                                energies=out.energies_per_atom, n_steps=out.n_steps, wall_time_s=wall, provenance=prov)
        targets = self._targets(out, settings, prov)
        status: Status = "ok" if out.status == "ok" else "unconverged"
        message = "" if status == "ok" else f"relaxation stopped at the step cap ({settings.relax_steps})"
        return OracleResult(candidate_id=handle.candidate_id, status=status, message=message, targets=targets,
                            structure_cif=structure_to_cif(out.structure), energies=out.energies_per_atom,
                            n_steps=out.n_steps, wall_time_s=wall, provenance=prov)

    # -- helpers --------------------------------------------------------------------------------
    def _failure(self, candidate_id: str, kind: FailureKind, message: str) -> OracleResult:
        return failed(candidate_id, "failed", message, provenance={"failure": kind})

    def _no_job(self, candidate: Candidate, jobdir: Path, meta: dict[str, Any], result: OracleResult) -> JobHandle:
        result.provenance.update(oracle=self.name, oracle_version=ORACLE_VERSION, code=self.settings.code,
                                 job_dir=str(jobdir), reference=self.settings.reference,
                                 sanity_gates=GATES.provenance(), **(meta.get("input") or {}))
        write_text_atomic(jobdir / "failed.json", result.to_json())
        meta["scheduler"] = NO_JOB
        write_json_atomic(jobdir / "meta.json", meta)
        return JobHandle(candidate.id, int(meta["attempt"]), NO_JOB, NO_JOB, str(jobdir))

    def _structure(self, candidate: Candidate, seed: int) -> tuple[Structure, dict[str, Any]]:
        if candidate.structure is not None:
            return candidate.structure, {"input": "structure"}
        assert candidate.crystal is not None
        dseed = candidate.candidate_seed(seed)
        dec = decode_crystal(candidate.crystal, seed=dseed)
        return dec.structure, {"input": "crystal", "decode_seed": dseed, "decode_attempt": dec.attempt,
                               "decode_volume_scale": round(dec.volume_scale, 6)}

    def _reference_dir(self, jobdir: Path, settings: DFTSettings) -> Path | None:
        """Elemental references are shared by jobs whose physics settings agree (retry knobs excluded)."""
        if settings.code != "gpaw" or settings.elemental_references == "none":
            return None
        physics = {k: v for k, v in settings.job_dict().items()
                   if k not in ("walltime_s", "cores", "memory_mb", "max_scf_iterations", "mixing_beta", "kpts")}
        digest = hashlib.sha256(json.dumps(physics, sort_keys=True).encode()).hexdigest()[:12]
        return jobdir.parent.parent / "_elemental-references" / f"gpaw-{digest}"

    def _targets(self, out: CodeOutput, settings: DFTSettings, prov: dict[str, Any]) -> dict[str, float | None]:
        from oracles.reference import corrected_energy, load_reference

        assert out.structure is not None and out.energy_eV is not None
        s, energy = out.structure, out.energy_eV
        comp, n = s.composition, len(s)
        targets: dict[str, float | None] = {"energy_per_atom": energy / n, "formation_energy_per_atom": None,
                                            "e_above_hull": None, "density": float(s.density),
                                            "volume_per_atom": float(s.volume / n)}
        if out.forces:
            targets["max_force"] = max(sum(f * f for f in row) ** 0.5 for row in out.forces)
        e_form: float | None = None
        if settings.code == "gpaw":
            mu = out.elemental_energies_per_atom
            missing = [el.symbol for el in comp.elements if el.symbol not in mu]
            if not missing:
                e_form = (energy - sum(mu[el.symbol] * amt for el, amt in comp.items())) / n
                prov["formation_energy_reference"] = (
                    "GPAW elemental ground states (ASE reference crystals; diatomic molecules in a box for gases) "
                    "with the same settings; "
                    f"mu (eV/atom) = {json.dumps(mu, sort_keys=True)}")
            else:
                prov["formation_energy_reference"] = f"none: no GPAW elemental reference for {missing} " \
                                                     f"({out.elemental_errors or 'elemental_references: none'})"
        elif settings.code == "vasp":
            try:
                corrected = corrected_energy(s, energy)[0]
                ref = load_reference(settings.reference, **_mp20_kw(settings))
                e_form = ref.formation_energy_per_atom(comp, corrected)
                targets["corrected_energy_per_atom"] = corrected / n
                prov["formation_energy_reference"] = "MP elemental references, MP2020 corrections (MP input set)"
            except Exception as exc:
                prov["formation_energy_reference"] = f"none: {type(exc).__name__}: {exc}"
        else:
            prov["formation_energy_reference"] = "none: QE energies are not on a reference scale here"
        targets["formation_energy_per_atom"] = e_form
        if e_form is not None:
            try:
                ref = load_reference(settings.reference, **_mp20_kw(settings))
                targets["e_above_hull"] = ref.e_above_hull(comp, e_form)
                prov["hull_reference"] = ref.provenance()
                if settings.code == "gpaw":
                    prov["hull_reference"]["note"] = ("MP2020-scale reference hull; the GPAW formation energy is "
                                                      "on its own PBE/PAW-setup scale (systematic offset)")
            except Exception as exc:
                prov["hull_error"] = f"{type(exc).__name__}: {exc}"
        return targets


def _mp20_kw(settings: DFTSettings) -> dict[str, Any]:
    return {"mp20_dir": Path(settings.mp20_dir)} if settings.mp20_dir else {}


def _classify(out: CodeOutput, job: Any, end: str | None, settings: DFTSettings,
              jobdir: Path) -> tuple[FailureKind | None, str]:
    """How a finished job ended: ``(None, "")`` for a usable result, else the failure kind and a message."""
    walltime = settings.walltime_s
    ran = job.elapsed_s if job.elapsed_s is not None else (time.time() - job.started if job.started else 0.0)
    if end == "CANCELLED" and out.status not in ("ok", "relax_unconverged"):
        return "cancelled", "the job was cancelled"
    if end in ("TIMEOUT", "DEADLINE") or (job.terminated and ran >= 0.9 * walltime and out.status == "missing"):
        return "timeout", f"the job ran out of its walltime ({walltime} s)"
    if end == "OUT_OF_MEMORY" or out.status == "out_of_memory":
        return "out_of_memory", f"the job ran out of memory ({settings.memory_mb or 'no limit set'} MB)"
    if out.status == "scf_unconverged":
        return "scf_unconverged", out.message or "SCF did not converge"
    if out.status in ("ok", "relax_unconverged"):
        return None, ""
    if job.terminated and end is None:
        return "cancelled", "the job was terminated (SIGTERM) before its walltime"
    if end == "LOST" or (job.started is None and job.exit_code is None):
        return "lost", "the job left the queue without running to the end (no exit status)"
    if job.exit_code in (137, -9) and out.status == "missing":
        return "out_of_memory", f"the job was killed (SIGKILL, exit {job.exit_code}): probably out of memory"
    if out.info.get("parse_exception") or (job.exit_code == 0 and out.status in ("missing", "error")):
        return "parse_error", out.message or "the job exited 0 but its output could not be parsed"
    tail = ""
    try:
        lines = (jobdir / "run.log").read_text().splitlines()
        tail = lines[-1] if lines else ""
    except OSError:
        pass
    return "exit_code", f"exit code {job.exit_code}: {out.message or tail}".strip()


class GPAWOracle(DFTOracle):
    """The ``gpaw`` oracle: :class:`DFTOracle` with ``code='gpaw'`` (the only accepted code)."""

    settings_model: ClassVar[type[BaseModel]] = GPAWSettings

    def __init__(self, **settings: Any) -> None:
        code = settings.setdefault("code", "gpaw")
        if code != "gpaw":
            raise ValueError(f"oracle 'gpaw' runs GPAW only (code={code!r}); use the 'dft' oracle for qe/vasp")
        super().__init__(**settings)
