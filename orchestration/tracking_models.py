"""Campaign models as MLflow ``pyfunc`` models, loadable with ``mlflow.pyfunc.load_model``.

Both take a pandas DataFrame and return one:

* **proxy** (``matloop.<campaign>.proxy``): input a crystal table (columns ``space_group``,
  ``composition``, ``a b c alpha beta gamma``, optional ``id``; see :mod:`discovery.crystal`);
  output one row per input row: ``id`` and, per target, ``<target>_mean`` and ``<target>_std``
  (the ensemble's calibrated predictive mean and standard deviation).
* **generator** (``matloop.<campaign>.generator``): input rows with a column ``n`` (how many
  crystals to sample) and optionally ``seed``; output the sampled crystals as a crystal table
  (``id``, ``space_group``, ``composition``, lattice columns) with a column ``request`` naming the
  input row each crystal was sampled for.

The saved campaign model directory travels inside the MLflow model as the artifact ``model``;
loading needs matloop installed (the wrappers are imported by name, not pickled by value).

Example::

    import mlflow, pandas as pd
    proxy = mlflow.pyfunc.load_model("models:/matloop.demo.proxy@champion")
    proxy.predict(pd.read_csv("runs/demo/rounds/round-000/batch.csv"))
    gen = mlflow.pyfunc.load_model("models:/matloop.demo.generator@champion")
    gen.predict(pd.DataFrame({"n": [5], "seed": [0]}))
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any, Literal

import mlflow.pyfunc
import pandas as pd
from mlflow.pyfunc import PythonModel

ModelKind = Literal["proxy", "generator"]


class ProxyModel(PythonModel):  # type: ignore[misc]
    """Every target's ensemble proxy of one round (``<model>/<target>/config.json``, ``weights.pt``)."""

    def load_context(self, context: Any) -> None:
        from discovery.proxy import EnsembleProxy

        root = Path(context.artifacts["model"])
        self.proxies = {d.name: EnsembleProxy.load(d) for d in sorted(root.iterdir()) if (d / "config.json").exists()}

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from discovery.crystal import crystals_from_frame

        crystals = crystals_from_frame(pd.DataFrame(model_input), source="model input")
        out = pd.DataFrame({"id": [c.id for c in crystals]})
        for name, proxy in self.proxies.items():
            mean, std = proxy.posterior(crystals).column(0)
            out[f"{name}_mean"] = mean.numpy().astype(float)
            out[f"{name}_std"] = std.numpy().astype(float)
        return out


class GeneratorModel(PythonModel):  # type: ignore[misc]
    """The round's Crystal-GFN checkpoint; samples ``n`` crystals per input row."""

    def load_context(self, context: Any) -> None:
        from discovery.gfn import CrystalGFN

        self.gfn = CrystalGFN.load(context.artifacts["model"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from discovery.crystal import crystals_to_frame

        frame = pd.DataFrame(model_input)
        if "n" not in frame.columns:
            raise ValueError("generator input needs a column `n` (crystals to sample per row), e.g. "
                             "pd.DataFrame({'n': [10], 'seed': [0]})")
        parts = []
        for i, row in enumerate(frame.to_dict("records")):
            seed = row.get("seed")
            crystals = self.gfn.sample(int(row["n"]), seed=None if seed is None or pd.isna(seed) else int(seed))
            part = crystals_to_frame(crystals)
            part["request"] = i
            parts.append(part)
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["id", "request"])


def save_pyfunc(kind: ModelKind, model_dir: str | Path, out: str | Path) -> Path:
    """Write the MLflow model (``MLmodel``, ``python_model.pkl``, ``artifacts/model/...``) of a saved
    campaign model directory into ``out`` (replaced if present); returns ``out``."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    wrapper = ProxyModel() if kind == "proxy" else GeneratorModel()
    quiet = logging.getLogger("mlflow.pyfunc")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "serialized using CloudPickle": the class is pickled by reference
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "add type hints": the input is a DataFrame, no signature
            mlflow.pyfunc.save_model(
                path=str(out), python_model=wrapper, artifacts={"model": str(Path(model_dir).resolve())},
                pip_requirements=["matloop"],  # explicit: no slow requirement inference
                metadata={"matloop.kind": kind},
            )
    finally:
        quiet.setLevel(level)
    return out
