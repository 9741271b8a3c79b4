"""The campaign loop as plain functions over the store (no Prefect here).

``orchestration.flows`` wraps each step as a Prefect task; the steps themselves live here so that
they stay small, typed and testable:

* :mod:`.context` — one :class:`~.context.Campaign` per config path and process (config, store,
  tracker, directories, seeds, the oracle pool);
* :mod:`.data` — seed data and the labels gathered so far;
* :mod:`.steps` — fit proxy → train generator → sample + dedupe → select → evaluate;
* :mod:`.report` — round metrics, the batch table, CIFs of hits, plots and MLflow logging;
* :mod:`.progress` — a tiny hub the CLI plugs a Rich progress display into.

Every step is idempotent and keyed by the store's round state, and every random choice is a
function of (config seed, round index, labels so far), so a campaign killed at any moment and
resumed makes exactly the oracle calls of an uninterrupted run.
"""
