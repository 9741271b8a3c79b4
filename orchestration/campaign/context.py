"""One campaign as seen by a process: config, store, tracker, directories, seeds and oracles.

Flows and tasks pass only the config path and ids; each process (the flow process, or a Dask
worker) builds its :class:`Campaign` once with :func:`campaign_for` and reuses it.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestration.config import CampaignConfig, load_config, stored_reading
from orchestration.store import Store, open_campaign

if TYPE_CHECKING:
    from oracles.base import Oracle
    from orchestration.tracking import Tracker

_lock = threading.Lock()
_cache: dict[str, Campaign] = {}


def round_seed(seed: int, round_index: int) -> int:
    """The seed of everything random in round ``round_index`` (a pure function of the config seed)."""
    return (seed * 1_000_003 + round_index * 7_919 + 17) % (2**31 - 1)


class OraclePool:
    """``size`` oracle instances handed out one per concurrent task (created lazily, closed at the end).

    CHGNet gets ``workers=1`` per instance unless the config sets ``workers``: each concurrent task
    then relaxes in its own single-threaded process (see design §5 on torch threads), and
    ``oracle.timeout_s`` as its per-structure hard deadline (a hung worker is killed; Prefect's own
    task timeouts cannot interrupt work in a thread).
    """

    def __init__(self, name: str, settings: dict[str, Any], *, size: int, timeout_s: float | None = None) -> None:
        self.name = name
        self.settings = dict(settings)
        if name == "chgnet":
            self.settings.setdefault("workers", 1)
            if timeout_s is not None:
                self.settings.setdefault("timeout_s", timeout_s)
        self.size = size
        self._free: queue.Queue[Oracle] = queue.Queue()
        self._all: list[Oracle] = []
        self._lock = threading.Lock()

    @contextmanager
    def acquire(self) -> Iterator[Oracle]:
        from oracles.registry import get_oracle

        try:
            oracle = self._free.get_nowait()
        except queue.Empty:
            with self._lock:
                create = len(self._all) < self.size
                if create:
                    oracle = get_oracle(self.name, **self.settings)
                    self._all.append(oracle)
            if not create:
                oracle = self._free.get()
        try:
            yield oracle
        finally:
            self._free.put(oracle)

    def close(self) -> None:
        with self._lock:
            for oracle in self._all:
                close = getattr(oracle, "close", None)
                if callable(close):
                    close()
            self._all.clear()
            self._free = queue.Queue()


@dataclass
class Campaign:
    """A loaded campaign: ``config``, open ``store``, and lazily the tracker and oracles."""

    config: CampaignConfig
    config_path: Path
    store: Store
    _extras: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def root(self) -> Path:
        return self.config.resolved_dir()

    def round_dir(self, round_index: int) -> Path:
        d = self.root / "rounds" / f"round-{round_index:03d}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def model_dir(self, kind: str, round_index: int) -> Path:
        return self.root / "models" / kind / f"round-{round_index:03d}"

    def seed_for(self, round_index: int) -> int:
        return round_seed(self.config.seed, round_index)

    @cached_property
    def tracker(self) -> Tracker:
        from orchestration.tracking import Tracker

        return Tracker.for_config(self.config)

    @cached_property
    def oracles(self) -> OraclePool:
        size = getattr(self.config.runner, "max_workers", 1)
        return OraclePool(self.config.oracle.name, self.config.oracle_settings(), size=size,
                          timeout_s=self.config.oracle.timeout_s)

    def close(self) -> None:
        if "oracles" in self.__dict__:
            self.oracles.close()
        self.store.close()


def limit_torch_threads() -> None:
    """One torch thread in campaign processes (``MATLOOP_TORCH_THREADS`` to change): on a loaded
    2-core machine two intra-op threads made the proxy fit and GFlowNet training up to 18× slower."""
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("MATLOOP_TORCH_THREADS", "1"))))


def campaign_for(config_path: str | os.PathLike[str]) -> Campaign:
    """The process's :class:`Campaign` for a config file (loaded, validated and opened once)."""
    key = str(Path(config_path).resolve())
    with _lock:
        camp = _cache.get(key)
        if camp is None:
            limit_torch_threads()
            config = load_config(key)
            store, record = open_campaign(config)
            config = stored_reading(config, record.config_hash)[0]  # e.g. the CHGNet engine it was started with
            camp = _cache[key] = Campaign(config=config, config_path=Path(key), store=store)
        return camp


def release(config_path: str | os.PathLike[str]) -> None:
    """Close and forget the process's campaign for this config (oracle workers, store connections)."""
    key = str(Path(config_path).resolve())
    with _lock:
        camp = _cache.pop(key, None)
    if camp is not None:
        camp.close()
