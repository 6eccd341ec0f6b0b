"""Load and faults on a lab server (the lab-server issue): browsers while a run trains, two
people importing and training at the same moment, and the machine dying mid-run.

Three parts, each printing its figures and a PASS/FAIL line per target:

1. **Browsing while a run trains.** `streamlit run app.py --server.address 0.0.0.0` (login
   required; one account per session in ``TLS_USERS``) and the workspace's scheduler. A
   fine-tuning run (MobileNet α 0.25 at 224 px, the top 2 blocks unfrozen, on flowers5: every
   epoch runs the backbone, no cached features) trains once with no browser, then again while
   ``--sessions`` Playwright contexts, each logged in as its own user, click through Home,
   Dataset, Model, Training and Evaluation ``--rounds`` times, ``--think`` s between clicks.
   A page load is the time from the click on its sidebar link to the app being idle: the
   page's title shown, no script running (the app's ``data-test-script-state``) and nothing
   drawn as a placeholder (the start of a 0.5 s quiet spell). Beside it, the server's share:
   from the tab's rerun request to the run's "finished" message, both as Chromium's network
   layer saw them (CDP). Loads are also split into a page's first visit in a tab (its
   JavaScript chunks load and compile then) and later ones. Throughput is training images
   per second of the epochs that ran wholly inside the window (``progress.jsonl``'s
   ``epoch_end`` events: ``seconds`` per epoch, validation included; the first epoch, which
   traces the graph, never counts). Targets: p95 page load < 2 s, images/s drops ≤ 25%.
   Chromium runs on the same cores as the server and the training: the CPU time of each
   (and of whatever else the machine ran meanwhile) is printed, so the browsers' own cost
   shows, and so do the server's script runs (whole pages, fragments) and its CPU per run,
   and the wall time of the server's own run of each whole page (``TLS_PAGE_TIMES``,
   `ui.page_timing`): what a browser elsewhere would wait for besides network and drawing.
2. **Two people at the same instant.** Two processes wait on one barrier, then each imports a
   different half of flowers5 under the *same* name with its own owner and submits a run on
   it. Checks: two datasets with two names and two content hashes, each holding exactly its
   own images; both runs recorded with their owner and dataset and finished on the right
   dataset; the index as it stood equals the index rebuilt from the folders
   (``python -m tlcore runs rebuild-index``). The import race is repeated a few times.
3. **The machine dies.** A server (its own process group; the app starts the scheduler),
   one run training and one queued (``TLS_MAX_CONCURRENT_RUNS=1``); then every process of
   the workspace (server, scheduler, warm worker, training worker) is stopped and killed with
   SIGKILL at once. After a restart: seconds until the first run is ``interrupted`` and the
   second starts by itself, first with nobody visiting, then after the login page is opened,
   then after a login; then `jobs.resume` on the first must continue from its last epoch.

Usage::

    .venv/bin/python bench/bench_server.py [--sessions 10] [--rounds 3] [--quick]
                                           [--parts 1,2,3] [--think 1.0]
                                           [--niced-browsers]

``--niced-browsers``: Chromium at nice 19, so that it takes only the CPU the server and the
training leave: the nearest this one machine comes to browsers on other machines (the
training's throughput and the server's share of each load are then the figures that
count; the loads as the starved browsers see them are printed too).

``--quick`` (under 5 minutes): shorter trainings, no warm-up visit, one round (so nearly
every load is a page's first in its tab), one import race, shorter waits. Real photos
come from ``--flowers`` or ``$TLS_FLOWERS_DIR`` (default ``../shared/datasets/flowers5``);
ImageNet weights from ``$KERAS_HOME`` (default: a temporary copy of ``../shared/keras_home``;
without them the backbones have random weights, which changes no figure here). Chromium:
``$TLS_CHROMIUM`` (default ``/usr/bin/chromium``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
from streamlit.proto.BackMsg_pb2 import BackMsg  # noqa: E402
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: E402

from tests.browser import CHROMIUM, CHROMIUM_ARGS, _free_port  # noqa: E402
from ui.page_timing import TIMES_ENV as PAGE_TIMES_ENV  # noqa: E402

BROWSER = {"executable": CHROMIUM}  # --niced-browsers points it at a nice(1) wrapper
from tlcore.config import RunConfig  # noqa: E402
from tlcore.data import datasets  # noqa: E402
from tlcore.store import jobs, runs, scheduler  # noqa: E402
from tlcore.store.accounts import USERS_ENV, hash_password  # noqa: E402
from tlcore.store.workspace import open_workspace  # noqa: E402

PASSWORD = "bench password 1"
PAGES = (  # sidebar link → the title its page shows
    ("Home", "Transfer Learning Studio"),
    ("Dataset", "Dataset"),
    ("Model", "Model"),
    ("Training", "Training"),
    ("Evaluation", "Evaluation"),
)
QUIET_MS = 500  # idle this long after a load: the load is over (timed to the spell's start)
LOAD_TIMEOUT_MS = 60_000
TARGET_P95_S = 2.0
TARGET_DROP = 0.25
SERVER_START_S = 90
DONE = ForwardMsg.ScriptFinishedStatus.FINISHED_SUCCESSFULLY
FRAGMENT_DONE = ForwardMsg.ScriptFinishedStatus.FINISHED_FRAGMENT_RUN_SUCCESSFULLY

# Idle when the page's title is shown, no script runs (the app's own flag, which also covers
# runs too short to show the running indicator) and nothing is drawn as a placeholder;
# returns when that first began once it has lasted ``quietMs`` (page time).
IDLE_JS = """([title, quietMs]) => {
  const app = document.querySelector('[data-testid="stApp"]');
  const busy = !app || app.getAttribute('data-test-script-state') !== 'notRunning'
    || document.querySelector('[data-testid="stStatusWidget"]')
    || document.querySelector('[data-testid="stSkeleton"]');
  const shown = [...document.querySelectorAll('h1')]
    .some((h) => h.textContent.trim() === title);
  const now = performance.now();
  if (busy || !shown) { window.__tlsQuiet = null; return false; }
  if (window.__tlsQuiet == null) window.__tlsQuiet = now;
  return now - window.__tlsQuiet >= quietMs ? window.__tlsQuiet : false;
}"""


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# -- the studio as a server -----------------------------------------------------------------
class Server:
    """``./run-app.sh`` on 0.0.0.0 in its own process group (session)."""

    def __init__(self, workspace: Path, log: Path, env: dict, port: int | None = None):
        self.workspace, self.log_path, self.env = workspace, log, env
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        """Starts the server; returns the seconds until it answered its health check."""
        start = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    "bash",
                    "run-app.sh",  # as a lab starts it: the scheduler first, then the server
                    "--server.port",
                    str(self.port),
                    "--server.address",
                    "0.0.0.0",
                    "--server.headless",
                    "true",
                ],
                cwd=REPO,
                env=dict(os.environ, TLS_WORKSPACE=str(self.workspace), **self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - start
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise SystemExit(f"streamlit did not start; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(15)


def _users(count: int) -> tuple[list[str], str]:
    """``count`` member accounts with one password; returns their names and ``TLS_USERS``."""
    names = [f"user{i:02d}" for i in range(count)]
    table = {n: {"password_hash": hash_password(PASSWORD), "role": "member"} for n in names}
    return names, json.dumps(table)


def _start_scheduler(ws, env: dict) -> subprocess.Popen:
    """The workspace's scheduler, started as the app would (its own session)."""
    child_env, cwd = jobs.child_environment()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlcore", "--workspace", str(ws.root), "scheduler"],
        env=child_env | env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _wait(lambda: scheduler.status(ws).alive, 60, "the scheduler to report in")
    return proc


def _wait(condition, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def _state(ws, run_id: str) -> str:
    return runs.read_run(ws, run_id).state


# -- browsers ------------------------------------------------------------------------------
async def _idle_since(page, title: str, timeout_ms: int = LOAD_TIMEOUT_MS) -> float:
    """Waits until ``title`` is shown and the app is idle; returns when that began (page ms)."""
    handle = await page.wait_for_function(
        IDLE_JS, arg=[title, QUIET_MS], polling=50, timeout=timeout_ms
    )
    return float(await handle.json_value())


async def _log_in(page, url: str, user: str) -> float:
    """Opens the studio and logs in as ``user``; returns the seconds it took."""
    start = time.perf_counter()
    await page.goto(url, timeout=LOAD_TIMEOUT_MS)
    await _idle_since(page, "Log in")
    await page.get_by_role("textbox", name="User name").fill(user)
    await page.get_by_role("textbox", name="Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await _idle_since(page, PAGES[0][1])
    return time.perf_counter() - start


class ScriptRuns:
    """The Streamlit traffic of one tab, from Chromium's network layer (CDP), with its
    timestamps: when the tab asked for a whole-page run, and when each run finished."""

    def __init__(self) -> None:
        self.asked: list[float] = []  # rerun requests for the whole page (not a fragment)
        self.finished: list[tuple[float, int]] = []  # (time, ScriptFinishedStatus)

    async def attach(self, context, page) -> None:
        cdp = await context.new_cdp_session(page)
        cdp.on("Network.webSocketFrameSent", self._sent)
        cdp.on("Network.webSocketFrameReceived", self._received)
        await cdp.send("Network.enable")

    def _sent(self, params: dict) -> None:
        frame = params["response"]
        if frame.get("opcode") != 2:
            return
        msg = BackMsg()
        msg.ParseFromString(base64.b64decode(frame["payloadData"]))
        if msg.WhichOneof("type") == "rerun_script" and not msg.rerun_script.fragment_id:
            self.asked.append(params["timestamp"])

    def _received(self, params: dict) -> None:
        frame = params["response"]
        # A "script finished" message is tiny; the page's elements come in larger ones.
        if frame.get("opcode") != 2 or len(frame["payloadData"]) > 400:
            return
        msg = ForwardMsg()
        msg.ParseFromString(base64.b64decode(frame["payloadData"]))
        if msg.WhichOneof("type") == "script_finished":
            self.finished.append((params["timestamp"], msg.script_finished))

    def server_seconds(self, asked_before: int) -> float | None:
        """From the first whole-page request after ``asked_before`` requests to the end of
        the first whole-page run that finished after it: the server's share of a load."""
        if len(self.asked) <= asked_before:
            return None
        asked = self.asked[asked_before]
        ends = [t for t, status in self.finished if t >= asked and status == DONE]
        return ends[0] - asked if ends else None

    def counts(self) -> tuple[int, int]:
        """Whole-page runs and fragment runs that finished so far (not those cut short by
        a newer run)."""
        statuses = [status for _, status in self.finished]
        return statuses.count(DONE), statuses.count(FRAGMENT_DONE)


async def _open(page, link: str, title: str, traffic: ScriptRuns | None = None):
    """Clicks a sidebar link; returns the seconds until the page was loaded and idle, and
    the server's share of them (None without ``traffic``)."""
    asked = len(traffic.asked) if traffic else 0
    clicked = await page.evaluate("() => { window.__tlsQuiet = null; return performance.now(); }")
    nav = page.locator('[data-testid="stSidebarNav"]')
    await nav.get_by_role("link", name=link, exact=True).click()
    seconds = (await _idle_since(page, title) - clicked) / 1000
    return seconds, traffic.server_seconds(asked) if traffic else None


@dataclass
class Browsing:
    logins: list[float] = field(default_factory=list)
    loads: dict[str, list[float]] = field(default_factory=dict)
    server: dict[str, list[float]] = field(default_factory=dict)  # the server's share
    first_visits: list[float] = field(default_factory=list)  # a page's first load in a tab
    later_visits: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    window: tuple[float, float] = (0.0, 0.0)  # wall clock: all logged in → all done
    script_runs: tuple[int, int] = (0, 0)  # whole-page and fragment runs in the window

    @property
    def all_loads(self) -> list[float]:
        return [s for values in self.loads.values() for s in values]

    @property
    def all_server(self) -> list[float]:
        return [s for values in self.server.values() for s in values]


async def _browse(
    url: str, users: list[str], rounds: int, think: float, on_start=None, on_end=None
) -> Browsing:
    """Every user logs in in their own context; once all are in (``on_start()`` is called
    then), each clicks through the pages ``rounds`` times, starting at a different page,
    pausing ``think`` s between clicks; ``on_end()`` is called before the browser closes."""
    from playwright.async_api import async_playwright

    out = Browsing(loads={link: [] for link, _ in PAGES}, server={link: [] for link, _ in PAGES})
    all_in = asyncio.Barrier(len(users))
    tabs = [ScriptRuns() for _ in users]

    async def session(index: int, user: str, browser) -> None:
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        page = await context.new_page()
        traffic = tabs[index]
        await traffic.attach(context, page)
        try:
            out.logins.append(await _log_in(page, url, user))
            logged_in = True
        except Exception as exc:
            out.errors.append(f"{user} login: {_error_line(exc)}")
            logged_in = False
        await all_in.wait()
        if not logged_in:
            return
        order = PAGES[1:] + PAGES[:1]
        order = order[index % len(order) :] + order[: index % len(order)]
        for round_ in range(rounds):
            for link, title in order:
                try:
                    seconds, server = await _open(page, link, title, traffic)
                    out.loads[link].append(seconds)
                    if server is not None:
                        out.server[link].append(server)
                    # Home was drawn once at the login: its load here is a second visit.
                    first = round_ == 0 and link != PAGES[0][0]
                    (out.first_visits if first else out.later_visits).append(seconds)
                except Exception as exc:
                    out.errors.append(f"{user} {link}: {_error_line(exc)}")
                if think:
                    await asyncio.sleep(think)
        # The context stays open until the end: its processes' CPU time is counted then.

    def runs_so_far() -> tuple[int, int]:
        counts = [t.counts() for t in tabs]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=BROWSER["executable"], args=CHROMIUM_ARGS
        )
        sessions = [asyncio.create_task(session(i, u, browser)) for i, u in enumerate(users)]
        # The window opens when the last session has logged in (their barrier).
        while len(out.logins) + _login_errors(out) < len(users):
            await asyncio.sleep(0.05)
        if on_start is not None:
            on_start()
        start, before = time.time(), runs_so_far()
        await asyncio.gather(*sessions)
        out.window = (start, time.time())
        after = runs_so_far()
        out.script_runs = (after[0] - before[0], after[1] - before[1])
        if on_end is not None:
            on_end()
        await browser.close()
    return out


def _error_line(exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:200]


def _login_errors(out: Browsing) -> int:
    return sum(1 for e in out.errors if " login: " in e)


def _warm_up(url: str, user: str) -> dict[str, float]:
    """One session through every page: each page's first load after a server start."""

    async def run() -> dict[str, float]:
        from playwright.async_api import async_playwright

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=BROWSER["executable"], args=CHROMIUM_ARGS
            )
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            times = {"login": await _log_in(page, url, user)}
            for link, title in PAGES[1:] + PAGES[:1]:
                times[link] = (await _open(page, link, title))[0]
            await browser.close()
            return times

    return asyncio.run(run())


# -- CPU time by role ------------------------------------------------------------------------
def _roles(server_pid: int, worker_pid: int | None, scheduler_pid: int | None) -> dict:
    """pid → role for every process of this benchmark that uses CPU."""
    roles = {}
    me = psutil.Process()
    for proc in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            name = proc.name().lower()
            if "chrom" in name or "headless" in name:
                roles[proc.pid] = "chromium"
            elif "node" in name:
                roles[proc.pid] = "playwright"
    roles[server_pid] = "server"
    if scheduler_pid:
        roles[scheduler_pid] = "scheduler"
    if worker_pid:
        roles[worker_pid] = "training worker"
    return roles


def _system_busy() -> float:
    """CPU seconds this machine has been busy (every process, every core)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def _mine() -> dict[int, float]:
    me = psutil.Process()
    return _cpu_seconds([me.pid] + [p.pid for p in me.children(recursive=True)])


class Usage:
    """How busy the machine was from creation to `stop`, and how much of that was not this
    benchmark: the machine may be shared, and what else runs takes cores from both the
    training and the server."""

    def __init__(self) -> None:
        self.started, self.busy, self.mine = time.monotonic(), _system_busy(), _mine()

    def stop(self) -> None:
        mine = _mine()
        self.seconds = time.monotonic() - self.started
        self.total = (_system_busy() - self.busy) / self.seconds
        ours = sum(mine[pid] - self.mine.get(pid, 0.0) for pid in mine)
        self.others = max(0.0, self.total - ours / self.seconds)

    def text(self) -> str:
        return (
            f"machine busy {self.total:.2f} of {os.cpu_count()} cores, "
            f"{self.others:.2f} of them other processes"
        )


def _cpu_seconds(pids) -> dict[int, float]:
    out = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
    return out


# -- throughput from the progress log ---------------------------------------------------------
def _epochs(record) -> list[dict]:
    return [e for e in runs.read_progress(record.dir) if e.get("event") == "epoch_end"]


def _at(event: dict) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


def _images_per_s(epochs: list[dict], train_images: int) -> tuple[float, int]:
    """Training images per second over ``epochs`` (epoch_end events), and their count."""
    seconds = sum(float(e["seconds"]) for e in epochs)
    return (train_images * len(epochs) / seconds if seconds else 0.0), len(epochs)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _print_server_runs(page_times: Path, start: float, end: float) -> None:
    """The server's own runs of whole pages in the window (`ui.page_timing`): the part of
    a load a browser on another machine would wait for, besides the network and drawing."""
    runs_in_window: dict[str, list[float]] = {}
    for line in page_times.read_text().splitlines() if page_times.exists() else []:
        run = json.loads(line)
        if start <= run["start"] <= end and run["outcome"] in ("done", "stopped"):
            runs_in_window.setdefault(run["page"], []).append(run["seconds"])
    every = [s for values in runs_in_window.values() for s in values]
    print(
        "server's runs of whole pages in the window (script start to end, wall time): "
        + ", ".join(
            f"{page} n={len(v)} p50 {_pct(v, 0.5):.2f} s p95 {_pct(v, 0.95):.2f} s"
            for page, v in sorted(runs_in_window.items())
        )
        + f"; all n={len(every)} p50 {_pct(every, 0.5):.2f} s p95 {_pct(every, 0.95):.2f} s "
        f"max {max(every or [float('nan')]):.2f} s"
    )


# -- part 1 --------------------------------------------------------------------------------
def part_browsing(root: Path, flowers: Path, args) -> list[bool]:
    print(f"\n== 1. {args.sessions} browser sessions while a run trains ==")
    ws = open_workspace(root / "ws1")
    ds = datasets.import_folder(ws, flowers, name="flowers5", owner="user00")
    train_images = len(ds.items("train"))
    users, users_json = _users(args.sessions)
    # No warm worker: its TensorFlow import would land in the baseline's first epochs.
    env = {USERS_ENV: users_json, "TLS_WARM_WORKER": "0"}
    sched = _start_scheduler(ws, env)
    page_times = root / "page-times.jsonl"  # the server's own run of each page (ui/page_timing)
    server = Server(ws.root, root / "server1.log", env | {PAGE_TIMES_ENV: str(page_times)})
    try:
        up = server.start()
        if args.quick:
            print(f"server up in {up:.1f} s (--quick: no warm-up visit)")
        else:  # a server that has been up a while: every page has run once
            cold = _warm_up(server.url, users[0])
            print(
                f"server up in {up:.1f} s; first loads after the start (one session): "
                + ", ".join(f"{k} {v:.1f} s" for k, v in cold.items())
            )
        config = _training_config(ds.name, epochs=args.base_epochs)
        base_id = jobs.submit(ws, config.replace(name="alone"))
        # What else this machine ran meanwhile, from its first epoch's end to its last's.
        _wait(lambda: _epochs(runs.read_run(ws, base_id)), 300, "the first epoch alone")
        base_usage = Usage()
        _wait(
            lambda: len(_epochs(runs.read_run(ws, base_id))) >= args.base_epochs,
            600,
            "the run alone to end its epochs",
        )
        base_usage.stop()
        base = jobs.wait_for(ws, base_id, timeout=300)
        if base.state != runs.FINISHED:
            raise SystemExit(f"the baseline run ended {base.state}: {base.status.error}")
        _check_not_cached(base)
        base_ips, base_n = _images_per_s(_epochs(base)[1:], train_images)

        # The sessions log in while it starts; its first epoch (tracing) never counts.
        loaded_id = jobs.submit(ws, config.replace(name="with browsers", epochs=500))
        sched_pid = scheduler.status(ws).pid
        sampled = {}

        def sample_cpu(when: str) -> None:  # once every session is logged in; at the end
            worker_pid = runs.read_run(ws, loaded_id).status.pid
            sampled.setdefault("roles", {}).update(_roles(server.proc.pid, worker_pid, sched_pid))
            sampled[when] = _cpu_seconds(sampled["roles"])
            if when == "start":
                sampled["usage"] = Usage()
            else:
                sampled["usage"].stop()

        browsing = asyncio.run(
            _browse(
                server.url,
                users,
                args.rounds,
                args.think,
                on_start=lambda: sample_cpu("start"),
                on_end=lambda: sample_cpu("end"),
            )
        )
        jobs.cancel(ws, loaded_id)
        loaded = jobs.wait_for(ws, loaded_id, timeout=300)
    finally:
        server.stop()
        sched.send_signal(signal.SIGTERM)
        sched.wait(30)

    start, end = browsing.window
    inside = [e for e in _epochs(loaded)[1:] if _at(e) - float(e["seconds"]) >= start - 1]
    inside = [e for e in inside if _at(e) <= end + 1]
    load_ips, load_n = _images_per_s(inside, train_images)
    loads = browsing.all_loads
    print(
        f"training: {config.backbone} α {config.alpha} at {config.image_size} px, "
        f"{config.strategy} (top {config.unfreeze} blocks), batch {config.batch_size}, "
        f"{train_images} training images an epoch, weights {config.weights}"
    )
    print(
        f"alone:              {base_ips:6.1f} images/s  ({base_n} epochs after the first; "
        f"{base_usage.text()})"
    )
    print(
        f"with {args.sessions:2d} sessions:   {load_ips:6.1f} images/s  ({load_n} epochs; "
        f"{sampled['usage'].text()})"
    )
    ratio = load_ips / base_ips if base_ips else 0.0
    print(f"ratio loaded/alone: {ratio:.2f} (a drop of {1 - ratio:.0%})")
    print(
        f"browsing window {end - start:.0f} s: {args.sessions} sessions × {args.rounds} "
        f"round(s) × {len(PAGES)} pages, {args.think:g} s between clicks; "
        f"logins p50 {_pct(browsing.logins, 0.5):.1f} s, max {max(browsing.logins or [0]):.1f} s"
    )
    print(
        f"{'page':<11} {'loads':>5} {'p50 s':>6} {'p95 s':>6} {'max s':>6}   "
        f"server's share: {'p50 s':>6} {'p95 s':>6} {'max s':>6}"
    )
    rows = [(link, values, browsing.server[link]) for link, values in browsing.loads.items()]
    rows += [
        ("all", loads, browsing.all_server),
        ("1st in tab", browsing.first_visits, []),
        ("later", browsing.later_visits, []),
    ]
    for label, values, server_values in rows:
        share = (
            f"   {'':15} {_pct(server_values, 0.5):6.2f} {_pct(server_values, 0.95):6.2f} "
            f"{max(server_values):6.2f}"
            if server_values
            else ""
        )
        print(
            f"{label:<11} {len(values):>5} {_pct(values, 0.5):6.2f} {_pct(values, 0.95):6.2f} "
            f"{max(values or [float('nan')]):6.2f}{share}"
        )
    cpu = _print_cpu(sampled["roles"], sampled["start"], sampled["end"], end - start)
    pages_run, fragments_run = browsing.script_runs
    server_cpu = cpu.get("server", 0.0)
    print(
        f"script runs in the window: {pages_run} whole pages, {fragments_run} fragments "
        f"({(pages_run + fragments_run) / (end - start):.1f}/s); server CPU "
        f"{1000 * server_cpu / max(1, pages_run + fragments_run):.0f} ms a run on average"
    )
    _print_server_runs(page_times, start, end)
    for error in browsing.errors[:10]:
        print(f"  error: {error}")
    expected = args.sessions * args.rounds * len(PAGES)
    p95_ok = bool(loads) and _pct(loads, 0.95) < TARGET_P95_S and len(loads) == expected
    drop_ok = load_n >= 1 and ratio >= 1 - TARGET_DROP
    print(
        f"{verdict(p95_ok)}  p95 page load {_pct(loads, 0.95):.2f} s < {TARGET_P95_S:g} s "
        f"({len(loads)}/{expected} loads, {len(browsing.errors)} errors)"
    )
    print(
        f"{verdict(drop_ok)}  training images/s dropped {1 - ratio:.0%} ≤ {TARGET_DROP:.0%} "
        f"({base_ips:.1f} → {load_ips:.1f})"
    )
    return [p95_ok, drop_ok]


def _print_cpu(roles: dict, before: dict, after: dict, seconds: float) -> dict[str, float]:
    """Prints the CPU seconds each role used between ``before`` and ``after``; returns them."""
    by_role: dict[str, float] = {}
    for pid, role in roles.items():
        if pid in after:
            by_role[role] = by_role.get(role, 0.0) + after[pid] - before.get(pid, 0.0)
    total = sum(by_role.values())
    cores = ", ".join(
        f"{role} {cpu:.0f} s ({cpu / seconds:.2f} cores)"
        for role, cpu in sorted(by_role.items(), key=lambda kv: -kv[1])
    )
    print(f"CPU in the window ({total / seconds:.2f} of {os.cpu_count()} cores): {cores}")
    return by_role


def _training_config(dataset: str, *, epochs: int) -> RunConfig:
    from tlcore.model.weights import imagenet_weights_status

    weights = "imagenet" if imagenet_weights_status("MobileNet", 0.25, 224).available else "none"
    return RunConfig(
        dataset=dataset,
        backbone="MobileNet",
        alpha=0.25,
        weights=weights,
        image_size=224,
        strategy="fine_tune_top",
        unfreeze=2,
        head_search=False,
        epochs=epochs,
        batch_size=32,
        learning_rate=1e-4,
        flip="none",
    )


def _check_not_cached(record) -> None:
    phases = [e for e in runs.read_progress(record.dir) if e.get("event") == "phase_start"]
    if any(e.get("feature_cache") for e in phases):
        raise SystemExit("the benchmark run used cached features: images/s would mean nothing")


# -- part 2 --------------------------------------------------------------------------------
def _half_folders(flowers: Path, root: Path, attempt: int) -> list[Path]:
    """flowers5 split in two: the even and the odd files of each class (less one file
    per class after the first attempt, so that every attempt imports new content)."""
    out = []
    for half in (0, 1):
        target = root / f"attempt{attempt}" / f"half{half}"
        for class_dir in sorted(p for p in flowers.iterdir() if p.is_dir()):
            (target / class_dir.name).mkdir(parents=True, exist_ok=True)
            files = sorted(class_dir.iterdir())[half::2]
            if attempt:
                del files[attempt - 1]
            for path in files:
                shutil.copyfile(path, target / class_dir.name / path.name)
        out.append(target)
    return out


def _import_and_submit(ws_root, folder, name, owner, barrier, results, submit: bool) -> None:
    """One person: waits for the other, imports ``folder`` as ``name``, submits a run."""
    ws = open_workspace(ws_root)
    barrier.wait()
    started = time.time()
    row = {"owner": owner, "folder": str(folder), "start": started}
    try:
        ds = datasets.import_folder(ws, folder, name=name, owner=owner)
        row |= {"id": ds.id, "name": ds.name, "import_s": time.time() - started}
        if submit:
            config = _small_config(ds.name)
            row["run"] = jobs.submit(ws, config, owner=owner)
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    results.put(row)


def _small_config(dataset: str) -> RunConfig:
    return RunConfig(
        dataset=dataset,
        backbone="SmallCNN",
        weights="none",
        image_size=32,
        strategy="full_fine_tune",
        head_search=False,
        epochs=1,
        batch_size=32,
        flip="none",
    )


def _race(ws, folders: list[Path], name: str, submit: bool) -> list[dict]:
    ctx = multiprocessing.get_context("spawn")  # nothing of this process' state is shared
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(
            target=_import_and_submit,
            args=(ws.root, folder, name, f"person{i}", barrier, results, submit),
        )
        for i, folder in enumerate(folders)
    ]
    for proc in procs:
        proc.start()
    rows = [results.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(60)
    return sorted(rows, key=lambda r: r["owner"])


def _file_hashes(folder: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def _index_snapshot(ws) -> tuple[dict, dict]:
    with contextlib.closing(sqlite3.connect(ws.index_path)) as conn:
        run_rows = {
            rid: json.loads(st) for rid, st in conn.execute("SELECT id, status_json FROM runs")
        }
        ds_rows = {
            did: json.loads(m) for did, m in conn.execute("SELECT id, manifest_json FROM datasets")
        }
    return run_rows, ds_rows


def part_concurrent(root: Path, flowers: Path, args) -> list[bool]:
    print("\n== 2. two people importing and starting runs at the same moment ==")
    ws = open_workspace(root / "ws2")
    attempts = 1 if args.quick else 3
    checks: dict[str, bool] = {}
    duplicate_names = 0
    for attempt in range(attempts):
        folders = _half_folders(flowers, root / "halves", attempt)
        rows = _race(ws, folders, f"Flowers {attempt}", submit=attempt == 0)
        errors = [r["error"] for r in rows if "error" in r]
        starts = [r["start"] for r in rows]
        names = [r.get("name") for r in rows]
        same = len({str(n).casefold() for n in names}) < len(names)
        duplicate_names += same
        print(
            f"race {attempt + 1}: started {abs(starts[0] - starts[1]) * 1000:.0f} ms apart; "
            + "; ".join(
                f"{r['owner']} → {r.get('name')!r} ({r.get('id')}, {r.get('import_s', 0):.2f} s)"
                for r in rows
            )
            + (f"; errors: {errors}" if errors else "")
        )
        if attempt == 0:
            first = rows
    rows = first
    checks["no import failed"] = all("error" not in r for r in rows)
    checks["two imports with one name → two names"] = duplicate_names == 0
    by_owner = {}
    for row in rows:
        if "id" not in row:
            continue
        by_owner[row["owner"]] = (datasets.load_dataset(ws, row["id"]), row)
    hashes = {ds.content_hash for ds, _ in by_owner.values()}
    checks["two content hashes"] = len(hashes) == 2
    own = True
    for owner, (ds, row) in by_owner.items():
        items = ds.items()
        inside = all(item.path.is_relative_to(ds.dir) for item in items)
        stored = {hashlib.sha256(item.path.read_bytes()).hexdigest() for item in items}
        recorded = {item.sha256 for item in items}
        source = _file_hashes(Path(row["folder"]))
        matches = stored == recorded == source
        own &= inside and matches and ds.owner == owner
        print(
            f"{owner}: dataset {ds.id} named {ds.name!r}, owner {ds.owner}, {len(items)} "
            f"images, all inside its folder {inside}, files = records = its source {matches}"
        )
    checks["each dataset holds exactly its own images"] = own and len(by_owner) == 2

    right_runs = True
    for owner, (ds, row) in by_owner.items():
        record = jobs.wait_for(ws, row["run"], timeout=600)
        try:
            resolved = datasets.load_dataset(ws, record.config.dataset).id
        except datasets.DatasetError as exc:
            resolved = f"unresolvable ({exc})"
        ok = (
            record.owner == owner
            and record.config.dataset == ds.name
            and resolved == ds.id
            and record.state == runs.FINISHED
        )
        right_runs &= ok
        error = f", error: {record.status.error}" if record.status.error else ""
        print(
            f"{owner}: run {record.id} owner {record.owner}, dataset {record.config.dataset!r} → "
            f"{resolved}, {record.state}{error}"
        )
    checks["both runs recorded with their owner and dataset, finished"] = (
        right_runs and len(by_owner) == 2
    )

    runs.list_runs(ws)  # what a page would have seen last
    before = _index_snapshot(ws)
    env, cwd = jobs.child_environment()
    out = subprocess.run(
        [sys.executable, "-m", "tlcore", "--workspace", str(ws.root), "runs", "rebuild-index"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    after = _index_snapshot(ws)
    same_runs = before[0] == after[0]
    same_ds = before[1] == after[1]
    print(
        f"index: {len(before[0])} runs, {len(before[1])} datasets before; rebuilt "
        f"({out.stdout.strip() or out.stderr.strip()[-200:]}): {len(after[0])} runs, "
        f"{len(after[1])} datasets; runs identical {same_runs}, datasets identical {same_ds}"
    )
    checks["the index equals the one rebuilt from the folders"] = same_runs and same_ds
    for what, ok in checks.items():
        print(f"{verdict(ok)}  {what}")
    return list(checks.values())


# -- part 3 --------------------------------------------------------------------------------
def _workspace_processes(ws, server: Server, run_ids: list[str]) -> list[psutil.Process]:
    """Every process of the workspace: the server and all it started (the scheduler and
    the workers outlive it in their own sessions, but it is still their ancestor), plus the
    scheduler and the workers recorded in the workspace, in case they were started by
    someone else."""
    pids = {server.proc.pid}
    with contextlib.suppress(psutil.Error):
        pids |= {p.pid for p in psutil.Process(server.proc.pid).children(recursive=True)}
    status = scheduler.status(ws)
    for pid in (status.pid, status.warm_worker_pid):
        if pid:
            pids.add(pid)
    for run_id in run_ids:
        pid = runs.read_run(ws, run_id).status.pid
        if pid:
            pids.add(pid)
    for ready in (ws.cache_dir / jobs.WARM_DIR).glob("*.ready"):
        with contextlib.suppress(ValueError):
            pids.add(int(ready.stem))
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    return procs


def _kill_everything(procs: list[psutil.Process]) -> None:
    """As a machine dying: everything stopped first (so nobody reacts to the others'
    deaths), then SIGKILL to each."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGSTOP)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=10)


def _zombie_or_gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _visit(url: str, user: str | None, seconds_to_hold: float) -> None:
    """Opens the login page (and logs in when ``user``); keeps the page open a while."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=BROWSER["executable"], args=CHROMIUM_ARGS
        )
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        if user:
            await _log_in(page, url, user)
        else:
            await page.goto(url)
            await _idle_since(page, "Log in")
        await asyncio.sleep(seconds_to_hold)
        await browser.close()


def _epochs_after_resume(ws, run_id: str) -> list[dict]:
    events = runs.read_progress(runs.read_run(ws, run_id).dir)
    marks = [i for i, e in enumerate(events) if e.get("event") == "resume_requested"]
    later = events[marks[-1] :] if marks else []
    return [e for e in later if e.get("event") == "epoch_end"]


def part_kill(root: Path, flowers: Path, args) -> list[bool]:
    print("\n== 3. the server killed (SIGKILL, every process) while a run trains, one queued ==")
    ws = open_workspace(root / "ws3")
    ds = datasets.import_folder(ws, flowers, name="flowers5", owner="user00")
    users, users_json = _users(1)
    env = {USERS_ENV: users_json, jobs.MAX_CONCURRENT_ENV: "1"}
    server = Server(ws.root, root / "server3.log", env)
    server.start()
    long_config = _training_config(ds.name, epochs=200).replace(name="long")
    # run-app.sh started the scheduler (and its warm worker) before the server.
    asyncio.run(_visit(server.url, users[0], 0))
    _wait(lambda: scheduler.status(ws).alive, 60, "the app to start the scheduler")
    _wait(lambda: scheduler.status(ws).warm_worker_pid, 60, "a warm worker")
    first = runs.create_run(ws, long_config, owner=users[0]).id  # the scheduler starts it
    second = runs.create_run(ws, _small_config(ds.name).replace(name="next"), owner=users[0]).id
    _wait(lambda: _state(ws, first) == runs.RUNNING, 30, "the scheduler to start the first run")
    before_kill = 1 if args.quick else 2
    _wait(
        lambda: len(_epochs(runs.read_run(ws, first))) >= before_kill,
        300,
        f"{before_kill} epoch(s) of the first run",
    )
    epochs_done = len(_epochs(runs.read_run(ws, first)))
    procs = _workspace_processes(ws, server, [first, second])
    worker_pid = runs.read_run(ws, first).status.pid
    roles = {
        server.proc.pid: "server",
        scheduler.status(ws).pid: "scheduler",
        worker_pid: "training worker",
        scheduler.status(ws).warm_worker_pid: "warm worker",
    }
    names = ", ".join(f"{roles.get(p.pid, 'other')} {p.pid}" for p in procs)
    print(
        f"before: first run {_state(ws, first)} ({epochs_done} epochs done), second "
        f"{_state(ws, second)}; killing {len(procs)} processes: {names}"
    )
    _kill_everything(procs)
    server.proc.wait(10)
    epochs_done = len(_epochs(runs.read_run(ws, first)))  # one may have ended meanwhile
    dead = all(_zombie_or_gone(p) for p in procs)
    print(
        f"after the kill: all dead {dead}; first run's status.json says {_state(ws, first)}, "
        f"second {_state(ws, second)}"
    )

    restart = Server(ws.root, root / "server3b.log", env, port=server.port)
    checks: dict[str, bool] = {}
    timeline: dict[str, float] = {}
    try:
        up = restart.start()
        t0 = time.perf_counter()
        print(f"restarted: server up in {up:.1f} s")

        stop_watching = threading.Event()

        def watch() -> None:  # the first moment each thing is seen, polled every 0.1 s
            while not stop_watching.is_set() and len(timeline) < 3:
                now = time.perf_counter() - t0
                if _state(ws, first) == runs.INTERRUPTED:
                    timeline.setdefault("first interrupted", now)
                if _state(ws, second) != runs.QUEUED:
                    timeline.setdefault("second started", now)
                if scheduler.status(ws).alive:
                    timeline.setdefault("scheduler alive", now)
                time.sleep(0.1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()

        def settle(seconds: float) -> None:
            deadline = time.perf_counter() + seconds
            while len(timeline) < 3 and time.perf_counter() < deadline:
                time.sleep(0.1)

        def states() -> str:
            return (
                f"first {_state(ws, first)}, second {_state(ws, second)}, "
                f"scheduler alive {scheduler.status(ws).alive}"
            )

        idle = 5 if args.quick else 20
        settle(idle)
        print(f"nobody visiting for {idle} s: {states()}")
        checks["the second run starts with nobody visiting"] = "second started" in timeline
        if len(timeline) < 3:
            visit_at = time.perf_counter() - t0
            asyncio.run(_visit(restart.url, None, 0))
            watched = 5 if args.quick else 10
            settle(watched)
            print(
                f"login page opened at {visit_at:.1f} s, nobody logged in, {watched} s: {states()}"
            )
        if len(timeline) < 3:
            login_at = time.perf_counter() - t0
            asyncio.run(_visit(restart.url, users[0], 0))
            done_at = time.perf_counter() - t0
            settle(30)
            print(
                f"a login began at {login_at:.1f} s, its first page idle at {done_at:.1f} s: "
                f"{states()}"
            )
        stop_watching.set()
        watcher.join(5)
        print(
            "seconds after the restart: "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(timeline.items(), key=lambda kv: kv[1]))
        )
        record = runs.read_run(ws, first)
        checks["the first run is interrupted"] = record.state == runs.INTERRUPTED
        checks["the second run starts by itself (at the latest after a login)"] = (
            "second started" in timeline
        )
        if record.state == runs.INTERRUPTED:
            second_state = jobs.wait_for(ws, second, timeout=300).state
            resumed_at = time.perf_counter()
            jobs.resume(ws, first)
            _wait(lambda: _state(ws, first) == runs.RUNNING, 120, "the resumed run to start")
            running_s = time.perf_counter() - resumed_at
            after = _wait(lambda: _epochs_after_resume(ws, first), 300, "an epoch after it")[0]
            took = time.perf_counter() - resumed_at
            print(
                f"resume (once the second run ended {second_state}): running after "
                f"{running_s:.1f} s; its first epoch is epoch {after['epoch']} (had "
                f"{epochs_done}), done {took:.1f} s after jobs.resume"
            )
            checks["jobs.resume continues from the last completed epoch"] = (
                after["epoch"] == epochs_done + 1
            )
            jobs.cancel(ws, first)
            jobs.wait_for(ws, first, timeout=120)
        else:
            checks["jobs.resume continues from the last completed epoch"] = False
    finally:
        leftovers = _workspace_processes(ws, restart, [first, second]) if restart.proc else []
        restart.stop()
        for proc in leftovers:  # the scheduler and its warm worker outlive the server
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        psutil.wait_procs(leftovers, timeout=15)
    for what, ok in checks.items():
        print(f"{verdict(ok)}  {what}")
    return list(checks.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=None, help="default 3; --quick: 1")
    parser.add_argument("--think", type=float, default=1.0, help="seconds between clicks")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parts", default="1,2,3")
    parser.add_argument("--flowers", default=os.environ.get("TLS_FLOWERS_DIR"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--niced-browsers",
        action="store_true",
        help="run Chromium at the lowest CPU priority (nice 19), as if the browsers were on "
        "other machines: they only get CPU the server and the training leave",
    )
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.base_epochs = 4 if args.quick else 8
    flowers = Path(args.flowers or REPO.parent / "shared" / "datasets" / "flowers5")
    root = Path(tempfile.mkdtemp(prefix="tls-server-"))
    os.environ["TLS_AUTO_CALIBRATE"] = "0"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ[jobs.MAX_CONCURRENT_ENV] = "1"
    if "KERAS_HOME" not in os.environ and (REPO.parent / "shared" / "keras_home").is_dir():
        shutil.copytree(REPO.parent / "shared" / "keras_home", root / "keras_home")
        os.environ["KERAS_HOME"] = str(root / "keras_home")
    if args.niced_browsers:
        wrapper = root / "chromium-niced"
        # Linux shares CPU between sessions ("autogroups") before nice applies inside one:
        # Chromium gets a session of its own, whose autogroup is niced as well.
        niced = f'echo 19 > /proc/self/autogroup; exec nice -n 19 {CHROMIUM} "$@"'
        wrapper.write_text(f"#!/bin/sh\nexec setsid -w sh -c '{niced}' chromium \"$@\"\n")
        wrapper.chmod(0o755)
        BROWSER["executable"] = str(wrapper)
        print("Chromium runs at nice 19: the browsers get only the CPU left over")
    started = time.perf_counter()
    results = []
    try:
        parts = {p.strip() for p in args.parts.split(",")}
        if "1" in parts:
            results += part_browsing(root, flowers, args)
        if "2" in parts:
            results += part_concurrent(root, flowers, args)
        if "3" in parts:
            results += part_kill(root, flowers, args)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"\n{sum(results)}/{len(results)} targets met in {time.perf_counter() - started:.0f} s "
        f"(on {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
