"""SevenNet through torch-sim's own ``SevenNetModel``, weights from the ``sevenn`` wheel (never downloaded).

Pretrained models shipped in ``sevenn`` 0.12.1 (``sevenn/pretrained_potentials``): ``7net-0`` (SevenNet-0,
11 Jul 2024, trained on MPtrj) and ``7net-l3i5`` (SevenNet-l3i5, MPtrj). A name whose checkpoint is not in
the installed wheel is refused instead of being downloaded.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import warnings
from dataclasses import dataclass
from typing import Any, Literal

SevenNetName = Literal["7net-0", "7net-l3i5"]
SEVENNET_MODELS: dict[str, str] = {"7net-0": "SevenNet-0 (11Jul2024)", "7net-l3i5": "SevenNet-l3i5"}


def checkpoint_path(name: str) -> str:
    """The checkpoint of ``name`` inside the installed ``sevenn`` wheel; FileNotFoundError if it is not there."""
    import sevenn._const as const

    path = {"7net-0": const.SEVENNET_0_11Jul2024, "7net-l3i5": const.SEVENNET_l3i5}.get(name)
    if path is None:
        raise ValueError(f"unknown SevenNet model {name!r}; choose one of {sorted(SEVENNET_MODELS)}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"SevenNet checkpoint {path} is not in the installed sevenn wheel "
                                "(install sevenn==0.12.1; matloop never downloads weights at run time)")
    return str(path)


@functools.cache
def load_sevennet_model(name: str, *, device: str = "cpu") -> Any:
    """torch-sim's ``SevenNetModel`` around the shipped checkpoint, once per process and device."""
    from importlib.metadata import version

    from sevenn.util import model_from_checkpoint

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        from torch_sim.models.sevennet import SevenNetModel

        net, _ = model_from_checkpoint(checkpoint_path(name))
        model = SevenNetModel(model=net, device=device)
    model.model_version = f"{SEVENNET_MODELS[name]}, sevenn {version('sevenn')}"
    model.model_time_s = 0.0
    return model


@dataclass(frozen=True)
class SevenNetHandle:
    """What the oracle keeps per process for SevenNet: the torch-sim model (``batched_model``); picklable
    factory ``SevenNetHandle.factory(name)(device)`` for the oracle's ``calculator_factory``."""

    name: str
    device: str

    def batched_model(self) -> Any:
        return load_sevennet_model(self.name, device=self.device)

    def reset(self) -> None:  # the oracle's calculator protocol; nothing to reset
        return None


@dataclass(frozen=True)
class SevenNetFactory:
    name: str

    def __call__(self, device: str) -> SevenNetHandle:
        handle = SevenNetHandle(self.name, device)
        handle.batched_model()  # load now (worker start-up), not inside the first batch
        return handle
