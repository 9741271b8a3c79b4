"""Reading a campaign back out of its store: the ``status`` summary, the export, locating stores."""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path
from typing import Any

import yaml

from discovery.crystal import write_crystal_table
from orchestration.config import CampaignConfig, ConfigError, load_config, parse_config
from orchestration.errors import UserError
from orchestration.store import Store, StoreError
from orchestration.store.models import sun_columns
from orchestration.store.repository import SNAPSHOT_MARK
from orchestration.urls import url_secret

SNAPSHOT = "campaign.yaml"


def write_snapshot(config: CampaignConfig) -> Path:
    """``<campaign dir>/campaign.yaml``: the config with its resolved locations, for ``resume`` and deployments.
    URLs that carry a secret (a password, a secret query parameter; see :func:`orchestration.urls.url_secret`)
    are left out (they come from the environment again)."""
    data = config.model_dump(mode="json", exclude_none=True)
    data["campaign_dir"] = str(config.resolved_dir())
    store = config.resolved_store_url()
    if url_secret(store) is None:
        data["store_url"] = store
    uri = config.resolved_tracking_uri()
    if url_secret(uri) is None:
        data.setdefault("tracking", {})["uri"] = uri
    path = config.resolved_dir() / SNAPSHOT
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{SNAPSHOT_MARK}: the config of campaign {config.name!r} as `matloop run` started it "
                   f"(resume reads it)\n" + yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)
    return path


def snapshot_for(name: str, *, directory: Path | None = None) -> Path:
    """The snapshot of campaign ``name`` (``runs/<name>/campaign.yaml`` unless ``directory``)."""
    path = (directory or Path("runs") / name) / SNAPSHOT
    if not path.exists():
        raise UserError(f"no campaign {name!r} here: {path} does not exist; run `matloop run CONFIG` first, "
                        "or pass --dir with the campaign directory")
    load_config(path)  # validates
    return path.resolve()


def store_url_for(name: str | None, *, store: str | None) -> str:
    """--store, else $MATLOOP_STORE_URL, else the campaign's SQLite file (found under runs/ when unnamed)."""
    if store:
        return store
    if os.environ.get("MATLOOP_STORE_URL"):
        return os.environ["MATLOOP_STORE_URL"]
    if name is not None:
        snap = Path("runs") / name / SNAPSHOT
        if snap.exists():
            try:
                return load_config(snap).resolved_store_url()
            except ConfigError:
                pass
        db = Path("runs") / name / "store.db"
        if db.exists():
            return f"sqlite:///{db.resolve()}"
        raise UserError(f"no store for campaign {name!r}: {db} does not exist; pass --store URL or run the campaign first")
    found = sorted(glob.glob("runs/*/store.db"))
    if len(found) == 1:
        return f"sqlite:///{Path(found[0]).resolve()}"
    if not found:
        raise UserError("no campaign store under runs/; run `matloop run CONFIG` first or pass --store URL")
    raise UserError(f"{len(found)} campaign stores under runs/ ({', '.join(found)}); name the campaign or pass --store URL")


def open_store(url: str) -> Store:
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        parsed = None
    if parsed is not None and parsed.get_backend_name() == "sqlite" and parsed.database \
            and not Path(parsed.database).exists():
        raise StoreError(f"campaign store {parsed.database} does not exist; check the name or --store URL")
    return Store.open(url, create=False)


def pick_campaign(store: Store, name: str | None) -> str:
    names = store.campaigns()
    if name is not None:
        if name not in names:
            raise StoreError(f"no campaign named {name!r} in the store (known: {', '.join(names) or 'none'})")
        return name
    if len(names) != 1:
        raise UserError(f"the store holds {len(names)} campaigns ({', '.join(names) or 'none'}); name one")
    return names[0]


def campaign_config(store: Store, name: str) -> CampaignConfig:
    return parse_config(store.get_campaign(name).config, source=f"campaign {name!r} in the store")


def status(store: Store, name: str, *, top: int = 5) -> dict[str, Any]:
    """``matloop status --json``: the store summary (with ``sun``: S.U.N. counts) plus rounds_completed,
    oracle_calls, hits (status ok only), best (each with its S.U.N. labels, None until labelled) and writer
    (the run holding the campaign lock: pid, host, command; None when no run writes it)."""
    cfg = campaign_config(store, name)
    summary = store.summary(name)
    target = next((t for t in cfg.targets if t.source == "oracle"), cfg.targets[0])
    results = store.results(name)
    ok = [r for r in results if r.status == "ok" and r.targets.get(target.name) is not None]

    def key(r: Any) -> float:
        v = float(r.targets[target.name])
        return -v if target.goal == "maximize" else (abs(v - (target.value or 0.0)) if target.goal == "target" else v)

    ok.sort(key=key)
    crystals = {c.id: c for c in store.crystals(name, [r.candidate_id for r in ok[:top]])} if ok else {}
    completed = [r for r in store.rounds(name) if r.completed]
    hits = [r for r in results if cfg.success.is_hit(r.targets, status=r.status)]
    labels = store.sun_labels(name)
    unique = completed[-1].metrics.get("cumulative_unique_hits") if completed else None
    done = {r.candidate_id for r in results}
    latest = {j.candidate_id: j for j in store.submissions(name)}  # ordered by attempt: the last one wins
    in_flight = [{"id": j.candidate_id, "attempt": j.attempt, "job_id": j.job_id, "scheduler": j.scheduler,
                  "workdir": j.workdir}
                 for j in latest.values() if j.candidate_id not in done]
    from orchestration.store.locks import lock_holder

    return {
        "jobs_in_flight": in_flight,
        "writer": lock_holder(store, name),
        **summary,
        "rounds_completed": len(completed),
        "rounds_planned": cfg.rounds,
        "oracle_calls": len(results),
        "hits": len(hits),
        "unique_hits": int(unique) if unique is not None and math.isfinite(unique) else len(hits),
        "target": target.name,
        "goal": target.goal,
        "best": [
            {"id": r.candidate_id, "formula": crystals[r.candidate_id].reduced_formula(),
             "space_group": crystals[r.candidate_id].space_group, "round": r.round_index,
             target.name: r.targets[target.name], "hit": cfg.success.is_hit(r.targets, status=r.status),
             **sun_columns(labels.get(r.candidate_id))}
            for r in ok[:top]
        ],
    }


def export(store: Store, name: str, out: Path) -> tuple[Path, int, int]:
    """Crystal table (``crystals.csv``, with the S.U.N. label columns) and relaxed CIFs (``cifs/<id>.cif``) of
    every candidate with an oracle result."""
    rows = [c for c in store.table(name) if c.extra.get("status") != "pending"]
    cifs = {r.candidate_id: r.relaxed_cif for r in store.results(name) if r.relaxed_cif}
    out.mkdir(parents=True, exist_ok=True)
    table = write_crystal_table(rows, out / "crystals.csv")
    n = 0
    for cid, text in cifs.items():
        (out / "cifs").mkdir(exist_ok=True)
        (out / "cifs" / f"{cid}.cif").write_text(text or "")
        n += 1
    return table, len(rows), n
