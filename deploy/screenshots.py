"""Screenshots of a finished campaign in the Prefect and MLflow UIs, for docs/ui.md.

Starts ``matloop ui`` (Prefect and MLflow servers on 127.0.0.1, free ports) in the project directory,
finds the campaign's runs through the two servers' REST APIs, opens each page in headless Chromium
(Debian's ``chromium`` package: ``apt-get install chromium``) driven over the DevTools protocol, waits
until the page shows the expected run names, and writes PNGs:

    prefect-runs.png            Prefect: flow runs of the campaign (campaign flow + one per round)
    prefect-campaign-run.png    Prefect: the campaign's flow run (its rounds as subflow runs)
    prefect-round-artifact.png  Prefect: the last round's summary artifact (markdown, top candidates)
    mlflow-runs.png             MLflow: the campaign's experiment, runs table with metric columns
    mlflow-parent-charts.png    MLflow: the parent run's per-round metric charts
    mlflow-round-artifacts.png  MLflow: a round run's artifacts with a plot open

Run it after ``make demo`` (or any campaign), from the repository root; the lead re-runs it whenever
the UIs change. A page that never shows what it should is an error (exit 1), its screenshot is kept
for diagnosis.

Examples:
    .venv/bin/python deploy/screenshots.py                         # campaign demo -> docs/screenshots/
    .venv/bin/python deploy/screenshots.py --campaign band_gap --out /tmp/shots --width 1800
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Shot:
    name: str
    url: str
    expect: tuple[str, ...]  # texts the rendered page must show before the capture
    click: str | None = None  # visible text of an element to click then (a tab)
    then_expect: tuple[str, ...] = ()  # texts the page must show after the click
    storage: tuple[tuple[str, str], ...] = ()  # localStorage items set for the origin before loading
    search: tuple[str, str] | None = None  # (placeholder of a search box, text to type into it) before the capture


# Metric columns of the MLflow runs table, in this order when the parent run has them (regexes).
PREFERRED_METRICS = (r"cumulative_sun", r"cumulative_unique_hits", r"best_so_far", r"proxy_.*(mae|error).*",
                     r"oracle_calls_total", r"hit_rate", r".*time.*|t_round.*")
N_METRIC_COLUMNS = 6
ASSISTANT_CLOSED = (("mlflow.assistant.panelOpen_v1", "false"), ("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true"))


# -- HTTP helpers ----------------------------------------------------------------------------------


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def _post(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


# -- matloop ui --------------------------------------------------------------------------------------


@contextlib.contextmanager
def matloop_ui(*, timeout_s: float) -> Iterator[tuple[str, str]]:
    """``matloop ui`` on free ports; yields (Prefect UI URL, MLflow UI URL)."""
    from orchestration.servers import free_port, stop_process_group

    exe = Path(sys.executable).parent / "matloop"
    argv = [str(exe if exe.exists() else "matloop"), "ui", "--prefect-port", str(free_port()),
            "--mlflow-port", str(free_port())]
    log = Path(tempfile.mkdtemp(prefix="matloop-shots-")) / "ui.log"
    scratch = ROOT / ".matloop-ui"  # matloop ui's working folder; removed again if this run made it
    made_scratch = not scratch.exists()
    env = {**os.environ, "COLUMNS": "200"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            text = log.read_text(errors="replace")
            pf, ml = re.search(r"Prefect UI:\s+(\S+)", text), re.search(r"MLflow UI:\s+(\S+)", text)
            if pf and ml:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"matloop ui did not start (see {log}):\n{text[-2000:]}")
            time.sleep(0.5)
        yield pf.group(1), ml.group(1)
    finally:
        stop_process_group(proc, timeout_s=30)
        if made_scratch:
            shutil.rmtree(scratch, ignore_errors=True)


# -- finding the campaign's runs ---------------------------------------------------------------------


def prefect_shots(ui: str, campaign: str) -> list[Shot]:
    api = ui.rstrip("/") + "/api"
    runs = _post(f"{api}/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 200})
    rounds = [r for r in runs if re.fullmatch(rf"{re.escape(campaign)}-round-(\d+)", r["name"])]
    if not rounds:
        raise SystemExit(f"Prefect has no flow run named {campaign}-round-N; run the campaign first (make demo)")
    last = max(rounds, key=lambda r: int(r["name"].rsplit("-", 1)[1]))
    shots = [Shot("prefect-runs", f"{ui}/runs", (last["name"],), search=("Search by flow run name", campaign))]
    parent_task = last.get("parent_task_run_id")
    if parent_task:
        parent = _get(f"{api}/flow_runs/{_get(f'{api}/task_runs/{parent_task}')['flow_run_id']}")
        shots.append(Shot("prefect-campaign-run", f"{ui}/runs/flow-run/{parent['id']}", (parent["name"],),
                          click="Subflow Runs", then_expect=(last["name"],)))
    artifacts = _post(f"{api}/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [last["id"]]}},
                                                    "sort": "CREATED_DESC", "limit": 5})
    if not artifacts:
        raise SystemExit(f"flow run {last['name']} has no artifact")
    shots.append(Shot("prefect-round-artifact", f"{ui}/artifacts/artifact/{artifacts[0]['id']}", (last["name"],)))
    return shots


def _artifact_files(api: str, run_id: str, path: str = "", depth: int = 0) -> list[str]:
    query = urllib.parse.urlencode({"run_id": run_id, **({"path": path} if path else {})})
    files = []
    for f in _get(f"{api}/artifacts/list?{query}").get("files", []):
        if f.get("is_dir") and depth < 3:
            files += _artifact_files(api, run_id, f["path"], depth + 1)
        elif not f.get("is_dir"):
            files.append(f["path"])
    return files


def mlflow_shots(ui: str, campaign: str) -> list[Shot]:
    api = ui.rstrip("/") + "/api/2.0/mlflow"
    experiments = _post(f"{api}/experiments/search", {"max_results": 1000}).get("experiments", [])

    def belongs(e: dict[str, Any]) -> bool:
        tags = {t["key"]: t["value"] for t in e.get("tags", [])}
        return tags.get("matloop.campaign") == campaign or e["name"] in (campaign, f"matloop/{campaign}")

    found = [e for e in experiments if belongs(e)]
    if not found:
        raise SystemExit(f"MLflow has no experiment for campaign {campaign!r} "
                         f"(experiments: {', '.join(e['name'] for e in experiments)})")
    exp = found[0]["experiment_id"]
    runs = _post(f"{api}/runs/search", {"experiment_ids": [exp], "max_results": 1000}).get("runs", [])

    def tag(run: dict[str, Any], key: str) -> str | None:
        return {t["key"]: t["value"] for t in run["data"].get("tags", [])}.get(key)

    parents = [r for r in runs if tag(r, "mlflow.parentRunId") is None]
    children = [r for r in runs if tag(r, "mlflow.parentRunId") is not None]
    if not parents or not children:
        raise SystemExit(f"experiment {found[0]['name']} has no parent run with round runs")
    parent = max(parents, key=lambda r: int(r["info"]["start_time"]))
    mine = [r for r in children if tag(r, "mlflow.parentRunId") == parent["info"]["run_id"]] or children
    base = f"{ui}/#/experiments/{exp}"
    pid, pname = parent["info"]["run_id"], parent["info"]["run_name"]
    names = sorted(m["key"] for m in parent["data"].get("metrics", []))
    wanted = [n for pat in PREFERRED_METRICS for n in names if re.fullmatch(pat, n)]
    columns = list(dict.fromkeys(wanted + names))[:N_METRIC_COLUMNS]
    # The runs table's state lives in the browser's localStorage (MLflow UI 3.x keys): show the chosen
    # metric columns, expand the parent run's rounds, keep the assistant panel closed.
    state = {"selectedColumns": [f"metrics.`{c}`" for c in columns], "runsExpanded": {pid: True},
             "orderByKey": "attributes.start_time", "orderByAsc": False, "startTime": "ALL", "lifecycleFilter": "Active"}
    storage = ((f'MLflowLocalStorage-1.1-ExperimentPage-["{exp}"]-ReactComponentState', json.dumps(state)),
               (f"MLflowLocalStorage-1.1-ExperimentView-{exp}-expandRows", "true"), *ASSISTANT_CLOSED)
    round_names = tuple(r["info"]["run_name"] for r in mine[:1])
    shots = [Shot("mlflow-runs", f"{base}/runs", (pname, *round_names, *columns[:2]), storage=storage),
             Shot("mlflow-parent-charts", f"{base}/runs/{pid}/model-metrics", tuple(columns[:1]), storage=ASSISTANT_CLOSED)]
    for run in sorted(mine, key=lambda r: -int(r["info"]["start_time"])):
        pngs = [p for p in _artifact_files(api, run["info"]["run_id"])
                if p.endswith(".png")]
        if pngs:
            plot = next((p for p in pngs if "hull" in p), pngs[0])
            shots.append(Shot("mlflow-round-artifacts", f"{base}/runs/{run['info']['run_id']}/artifacts/{plot}",
                              (Path(plot).name,), storage=ASSISTANT_CLOSED))
            break
    else:
        raise SystemExit("no round run of the campaign has a PNG artifact")
    return shots


# -- Chromium over the DevTools protocol -----------------------------------------------------------


class Browser:
    """Headless Chromium with one page, driven over CDP (websockets from the venv)."""

    def __init__(self, chromium: str, *, width: int, height: int) -> None:
        self.profile = tempfile.mkdtemp(prefix="matloop-chromium-")
        self.width, self.height = width, height
        argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                "--disable-extensions", "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{chromium} did not start its DevTools endpoint")
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        pages = [t for t in _get(f"http://127.0.0.1:{port}/json/list") if t["type"] == "page"]
        self.ws_url = pages[0]["webSocketDebuggerUrl"]

    def close(self) -> None:
        from orchestration.servers import stop_process_group

        stop_process_group(self.proc, timeout_s=10)
        shutil.rmtree(self.profile, ignore_errors=True)

    async def capture(self, shot: Shot, out: Path, *, timeout_s: float, settle_s: float) -> bool:
        """Open ``shot.url``, wait for its texts, click its tab, save a PNG; True if the texts appeared."""
        import websockets

        async with websockets.connect(self.ws_url, max_size=64 * 2**20) as ws:
            counter = 0

            async def call(method: str, **params: Any) -> Any:
                nonlocal counter
                counter += 1
                await ws.send(json.dumps({"id": counter, "method": method, "params": params}))
                while True:
                    msg = json.loads(await ws.recv())
                    if msg.get("id") == counter:
                        if "error" in msg:
                            raise RuntimeError(f"{method}: {msg['error']}")
                        return msg.get("result", {})

            async def body_text() -> str:
                res = await call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                                 returnByValue=True)
                return str(res.get("result", {}).get("value", ""))

            async def wait_for(texts: tuple[str, ...], until: float) -> bool:
                while time.monotonic() < until:
                    text = await body_text()
                    if all(t in text for t in texts):
                        return True
                    await asyncio.sleep(0.5)
                return False

            await call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                       deviceScaleFactor=1, mobile=False)
            until = time.monotonic() + timeout_s
            if shot.storage:
                parts = urllib.parse.urlsplit(shot.url)
                await call("Page.navigate", url=f"{parts.scheme}://{parts.netloc}/")
                await asyncio.sleep(2)
                await call("Runtime.evaluate", expression="".join(
                    f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in shot.storage))
                await call("Page.navigate", url="about:blank")  # a hash-only change would not reload the app
                await asyncio.sleep(0.5)
            await call("Page.navigate", url=shot.url)
            ok = await wait_for(shot.expect, until)
            if ok and shot.click:
                clicked = await call("Runtime.evaluate", returnByValue=True, expression=(
                    "(() => { const want = " + json.dumps(shot.click) + ";"
                    " const els = [...document.querySelectorAll('button, a, [role=tab], li, span, div')]"
                    "   .filter(e => e.children.length === 0 && e.innerText && e.innerText.trim() === want);"
                    " if (!els.length) return false; els[0].click(); return true; })()"))
                ok = bool(clicked.get("result", {}).get("value")) and await wait_for(shot.then_expect, until)
            if ok and shot.search:
                placeholder, text = shot.search
                typed = await call("Runtime.evaluate", returnByValue=True, expression=(
                    "(() => { const box = [...document.querySelectorAll('input[placeholder=" + json.dumps(placeholder) + "]')]"
                    "   .find(e => e.offsetParent !== null);"
                    " if (!box) return false; box.focus(); box.click(); return true; })()"))
                ok = bool(typed.get("result", {}).get("value"))
                if ok:
                    await call("Input.insertText", text=text)  # typed as a user would: the app sees the input events
                    await asyncio.sleep(2)  # the search is debounced
                    ok = await wait_for(shot.expect, until)
                    await call("Runtime.evaluate", expression="document.activeElement && document.activeElement.blur()")
            await asyncio.sleep(settle_s)  # charts and tables animate in
            png = await call("Page.captureScreenshot", format="png")
            out.write_bytes(base64.b64decode(png["data"]))
            return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--campaign", default="demo", help="campaign name (default: demo)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="folder for the PNGs")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1100)
    parser.add_argument("--timeout", type=float, default=90, help="seconds a page may take to show its runs")
    parser.add_argument("--settle", type=float, default=3, help="seconds to wait after the page is ready")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "",
                        help="browser binary (default: chromium on PATH; Debian: apt-get install chromium)")
    parser.add_argument("--prefect-ui", help="use this running Prefect UI (with --mlflow-ui) instead of starting matloop ui")
    parser.add_argument("--mlflow-ui", help="use this running MLflow UI")
    args = parser.parse_args(argv)
    if not args.chromium:
        parser.error("chromium not found: apt-get install chromium (Debian), or pass --chromium PATH")
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    running = contextlib.nullcontext((args.prefect_ui, args.mlflow_ui)) if args.prefect_ui and args.mlflow_ui else None
    with running or matloop_ui(timeout_s=240) as (prefect_ui, mlflow_ui):
        print(f"Prefect UI {prefect_ui}, MLflow UI {mlflow_ui}")
        shots = prefect_shots(prefect_ui, args.campaign) + mlflow_shots(mlflow_ui, args.campaign)
        browser = Browser(args.chromium, width=args.width, height=args.height)
        try:
            for shot in shots:
                path = args.out / f"{shot.name}.png"
                ok = asyncio.run(browser.capture(shot, path, timeout_s=args.timeout, settle_s=args.settle))
                print(f"{'wrote' if ok else 'FAILED (page never showed ' + repr(shot.expect) + ')'} {path}  <- "
                      f"{shot.url.replace(prefect_ui, '<prefect>').replace(mlflow_ui, '<mlflow>')}")
                if not ok:
                    failed.append(shot.name)
        finally:
            browser.close()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
