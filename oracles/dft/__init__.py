"""Queued DFT oracles: GPAW (runs offline here), Quantum ESPRESSO and VASP inputs, local and SLURM queues.

* :mod:`oracles.dft.settings` — :class:`DFTSettings` (every option, units, per-code defaults);
* :mod:`oracles.dft.oracle` — :class:`DFTOracle` / :class:`GPAWOracle` (submit, find, poll, collect, retry);
* :mod:`oracles.dft.codes` — input writing (GPAW, QE ``pw.in``, VASP MP input sets) and output parsing;
* :mod:`oracles.dft.jobfiles` — the job folder and its bash job script;
* :mod:`oracles.dft.schedulers` — ``local`` and ``slurm`` adapters; :mod:`oracles.dft.local_runner`;
* :mod:`oracles.dft.gpaw_job` — the standalone GPAW job script copied into each job folder.
"""
