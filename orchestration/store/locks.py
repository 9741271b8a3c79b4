"""One campaign, one writer: a lock row per campaign in the store, kept alive by a heartbeat.

``matloop run`` and ``resume`` (and a deployment's campaign flow) hold the lock of their campaign for as
long as they write to it. It is a row of the store's ``campaign_locks`` table, so it works the same on
SQLite and PostgreSQL and across machines that share a PostgreSQL store:

* **acquire**: in one transaction (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``SELECT ... FOR UPDATE`` and
  the primary key against two concurrent inserts) insert the row, or take it over if it is stale, or
  refuse with :class:`CampaignLocked`, whose message names the holder (pid, host, command, since when);
* **heartbeat**: a daemon thread refreshes ``heartbeat_at`` every ``heartbeat_s`` seconds; if the row
  was taken over meanwhile, :attr:`CampaignLock.lost` is set (the campaign flow stops before its next round);
* **release**: delete the row (only if it is still ours).

A lock is *stale* when its holder ran on this machine (same host name and boot id) and its process is
gone (pid not alive, or alive with another start time: a reused pid), or, for a holder on another
machine, when its heartbeat is older than ``stale_after_s`` (default 60 s: six missed heartbeats).
So after a SIGKILL on the same machine the next run takes over at once; after a crash elsewhere it
waits a minute. Clocks of machines sharing a store must agree to within a few seconds (NTP).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from orchestration.store.models import CampaignLockRow, StoreError
from orchestration.store.repository import READ_ONLY, Store

log = logging.getLogger("matloop.store.locks")

HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0


class CampaignLocked(StoreError):
    """Another live process holds the campaign's lock; the message names it."""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The start time of process ``pid`` (clock ticks since boot, from /proc), or "" if unknown/gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]  # field 22: starttime


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    now = _process_start(pid)
    return not (start and now and now != start)


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds (or wants) a lock."""

    host: str
    boot_id: str
    pid: int
    pid_start: str
    command: str

    @classmethod
    def this_process(cls, command: str) -> Holder:
        pid = os.getpid()
        return cls(socket.gethostname(), _boot_id(), pid, _process_start(pid), command[:255])


def _describe(row: CampaignLockRow, now: float) -> str:
    since = datetime.fromtimestamp(row.acquired_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (f"pid {row.pid} on host {row.host} (`{row.command}`, since {since}, last heartbeat "
            f"{max(0.0, now - row.heartbeat_at):.0f} s ago)")


def _stale(row: CampaignLockRow, me: Holder, now: float, stale_after_s: float) -> str | None:
    """Why the lock ``row`` is stale, or None while its holder may be alive."""
    if row.host == me.host and row.boot_id and row.boot_id == me.boot_id:
        if not _alive(row.pid, row.pid_start):
            return f"its process {row.pid} is gone"
        return None
    age = now - row.heartbeat_at
    if age > stale_after_s:
        return f"no heartbeat for {age:.0f} s (more than {stale_after_s:.0f} s)"
    return None


class CampaignLock:
    """The lock of campaign ``name`` in ``store`` (see the module docstring).

    Example::

        with CampaignLock(store, "demo", command="matloop run configs/demo.yaml"):
            ...  # the only writer of campaign demo
    """

    def __init__(self, store: Store, name: str, *, command: str = "matloop", heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S, holder: Holder | None = None) -> None:
        self.store = store
        self.name = name
        self.me = holder or Holder.this_process(command)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.token = uuid.uuid4().hex
        self.taken_over: str | None = None
        """The previous holder when :meth:`acquire` took over a stale lock (for a message)."""
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _refuse(self, row: CampaignLockRow, now: float) -> CampaignLocked:
        return CampaignLocked(
            f"campaign {self.name!r} is being written by {_describe(row, now)}; one run per campaign at a time: "
            f"wait for it to finish (`matloop status {self.name}`) or stop it (`kill {row.pid}` on {row.host}); "
            f"a crashed holder's lock is taken over by the next run (at once on the same machine, after "
            f"{self.stale_after_s:.0f} s without heartbeat from another)")

    def _check(self) -> None:
        """Refuse early, without a write transaction, while a live holder has the lock."""
        with self.store.engine.connect().execution_options(**READ_ONLY) as conn, Session(conn) as s:
            row = s.get(CampaignLockRow, self.name)
            now = time.time()
            if row is not None and row.token != self.token and _stale(row, self.me, now, self.stale_after_s) is None:
                raise self._refuse(row, now)

    def acquire(self) -> CampaignLock:
        """Take the lock (raises :class:`CampaignLocked` naming the holder) and start the heartbeat."""
        self._check()
        for _ in range(2):  # a concurrent insert of the same name: look again
            try:
                self._acquire_once()
                break
            except IntegrityError:
                continue
        else:
            self._check()
            raise StoreError(f"campaign {self.name!r}: could not take the campaign lock; try again")
        self._thread = threading.Thread(target=self._beat_loop, name=f"matloop-lock-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _acquire_once(self) -> None:
        m = self.me
        with self.store._session.begin() as s:
            row = s.get(CampaignLockRow, self.name, with_for_update=True)
            now = time.time()
            fields = dict(token=self.token, host=m.host[:255], boot_id=m.boot_id, pid=m.pid, pid_start=m.pid_start,
                          command=m.command, acquired_at=now, heartbeat_at=now)
            if row is None:
                s.add(CampaignLockRow(name=self.name, **fields))
                return
            if row.token == self.token:
                return
            why = _stale(row, m, now, self.stale_after_s)
            if why is None:
                raise self._refuse(row, now)
            self.taken_over = f"{_describe(row, now)}: {why}"
            log.warning("campaign %s: taking over the lock of %s", self.name, self.taken_over)
            for k, v in fields.items():
                setattr(row, k, v)

    def beat(self) -> bool:
        """Refresh the heartbeat; False (and :attr:`lost` set) when the lock is no longer ours."""
        with self.store._session.begin() as s:
            n = s.execute(update(CampaignLockRow)
                          .where(CampaignLockRow.name == self.name, CampaignLockRow.token == self.token)
                          .values(heartbeat_at=time.time())).rowcount  # type: ignore[attr-defined]
        if not n:
            self.lost = True
            log.error("campaign %s: this run lost its campaign lock (taken over by another run)", self.name)
        return bool(n)

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self.beat():
                    return
            except Exception as exc:  # a store hiccup: try again at the next beat
                log.warning("campaign %s: lock heartbeat failed: %s", self.name, exc)

    def release(self) -> None:
        """Stop the heartbeat and delete the lock row if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        try:
            with self.store._session.begin() as s:
                s.execute(delete(CampaignLockRow).where(CampaignLockRow.name == self.name,
                                                        CampaignLockRow.token == self.token))
        except Exception as exc:  # the next run will find it stale
            log.warning("campaign %s: could not release the lock: %s", self.name, exc)

    def __enter__(self) -> CampaignLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(store: Store, name: str) -> str | None:
    """Who holds campaign ``name``'s lock now (a description), or None (read-only; for ``status``; a store of
    an older schema without the lock table has no holder)."""
    try:
        with store.engine.connect().execution_options(**READ_ONLY) as conn, Session(conn) as s:
            row = s.scalar(select(CampaignLockRow).where(CampaignLockRow.name == name))
            return None if row is None else _describe(row, time.time())
    except DBAPIError:
        return None


_held: dict[str, CampaignLock] = {}
_held_lock = threading.Lock()


def held_lock(name: str) -> CampaignLock | None:
    """The lock of campaign ``name`` that this process holds, if any."""
    with _held_lock:
        return _held.get(name)


@contextmanager
def hold_campaign(url: str, name: str, *, command: str, heartbeat_s: float = HEARTBEAT_S,
                  stale_after_s: float = STALE_AFTER_S) -> Iterator[CampaignLock]:
    """Hold campaign ``name``'s lock in store ``url`` for the block (re-entrant within a process: a
    campaign flow started by ``matloop run`` reuses the command's lock)."""
    key = name
    with _held_lock:
        mine = _held.get(key)
    if mine is not None:
        yield mine
        return
    store = Store.open(url)
    lock = CampaignLock(store, name, command=command, heartbeat_s=heartbeat_s, stale_after_s=stale_after_s)
    try:
        lock.acquire()
        with _held_lock:
            _held[key] = lock
        try:
            yield lock
        finally:
            with _held_lock:
                _held.pop(key, None)
            lock.release()
    finally:
        store.close()
