"""Batched relaxation on torch-sim: many structures relaxed as one batched graph.

* :mod:`oracles.batched.chgnet_adapter`: CHGNet as a torch-sim ``ModelInterface``;
* :mod:`oracles.batched.sevennet`: SevenNet (weights from the ``sevenn`` wheel) through torch-sim's own interface;
* :mod:`oracles.batched.engine`: batched FIRE with a cell filter, per-structure caps and fault isolation,
  converged structures leaving the batch and new ones entering (torch-sim's ``InFlightAutoBatcher``);
* :mod:`oracles.batched.pool`: the engine in a pool of processes, every worker's batch fed from one shared
  queue of candidates (no static shards), results streamed back as they finish;
* :mod:`oracles.batched.run`: the oracle side (decode, sanity gates, engine, targets) used by
  ``CHGNetOracle(engine="batched")`` and the ``sevennet`` oracle.
"""
