"""Section 1 of the reliability suite: the bot killed (SIGKILL) at every named step of learning and forgetting
(memory/faults.py), in a real process on a real store (embedded Qdrant; PostgreSQL with pgvector), then restarted.

The process is tests/reliability/crash_driver.py playing a fixed scenario with a scripted model. A kill point is
a step and which time it is reached (`writeback.fact_stored:3`). The process must die there (killed by SIGKILL,
or the point was never reached: a violation). The restart resumes: starting the bot resumes its queue, finishes
interrupted deletions and purges; the scenario goes on from the event the kill interrupted, which is delivered
again only if the kill came before it committed anything (a message before its exchange was queued, a deletion
or an edit before its message was marked for forgetting, a forget-all or purge that had not ended: a user who
got no answer repeats the command). Then the end state is checked against the scenario's (`expected`):

- every exchange learned exactly once: each message kept once, each fact present once for its own user, the
  superseded one marked, none lost, none twice;
- every deletion finished and nothing forgotten back: nothing of a deleted or edited-away message, of what a
  user had before forgetting everything, or of an expired message; no `learned_from` row left "forgetting";
- nothing left queued or set aside;
- the store's own view consistent: its point count equals the listing, every memory's message is in
  `learned_from` (or a later deletion of it would miss it), mem0's history holds no memory that is gone (its
  text would outlive the forgetting);
- `PRAGMA integrity_check` is ok on every SQLite file in DATA_DIR (bot.sqlite3, mem0's history, embedded
  Qdrant's storage).

The full run (`full=True`) first plays the scenario once without a kill, tracing every step reached, then kills
one fresh bot per point chosen from that trace: for every step, its first time in each kind of event and its
last time. The CI sample (`full=False`) kills one bot over and over in a chain (each restart killed at the next
point, the last one run to the end) at the points that cover the main families. Every run's log (LOG_LEVEL=DEBUG)
is scanned for secrets and the scenario's canaries.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memory.faults import CRASH_AT, CRASH_TRACE
from tests.reliability import logscan
from tests.reliability.crash_driver import Scenario, scenario
from tests.reliability.tally import Table
from tests.servers.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[2]
SECTION = "1. Crash points"
# The CI chain (each point counted in the run it is armed in, which starts where the last kill left off).
CI_POINTS = ("writeback.queued:1", "writeback.fact_stored:2", "forget.store_deleted:1",
             "forget_all.queue_dropped:1")
RUN_TIMEOUT = 1800.0  # a run takes seconds; this only stops a hung one (an overloaded machine is slow)
# A killed worker's claim on a shared (PostgreSQL) queue is taken over when its lease runs out: short here, so a
# restart does not wait the default two minutes for it.
LEASE_SECONDS = "10"
# The step after which an event has done something durable and is not delivered again (see the docstring).
COMMITTED_BY = {"message": "writeback.queued", "delete": "forget.marked", "edit": "forget.marked"}

Entry = tuple[str, str, str, str, bool]  # user, kind, message id, text, superseded


@dataclass(frozen=True)
class Point:
    step: str
    nth: int

    def __str__(self) -> str:
        return f"{self.step}:{self.nth}"

    @property
    def family(self) -> str:
        return self.step.split(".")[0]

    @classmethod
    def parse(cls, text: str) -> Point:
        step, _, nth = text.partition(":")
        return cls(step, int(nth or 1))


@dataclass
class Run:
    """How one run of the driver went: its exit (-signal if killed), its trace, log and dump."""

    returncode: int
    trace: list[str]
    log: Path
    dump: dict[str, Any] | None
    seconds: float


class ForkServer:
    """The driver's fork server (`crash_driver --serve`): one run at a time, each a forked process."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._process: asyncio.subprocess.Process | None = None
        self.seconds: list[float] = []  # each run's wall time

    async def __aenter__(self) -> ForkServer:
        home = self._workdir / "mem0-home"
        home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "MEM0_TELEMETRY": "False", "MEM0_DIR": str(home)}
        with open(self._workdir / "server.log", "ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.reliability.crash_driver", "--serve", cwd=REPO, env=env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._process is not None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                await asyncio.wait_for(self._process.wait(), 30)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()

    async def run(self, env: dict[str, str], start: int, name: str) -> Run:
        """One run of the driver from event `start` with `env` added to the environment."""
        assert self._process and self._process.stdin and self._process.stdout
        name = f"{len(self.seconds):03d}-{name}"
        trace, log, dump = (self._workdir / f"{name}.{what}" for what in ("trace", "log", "json"))
        request = {"env": {**env, CRASH_TRACE: str(trace)}, "start": start, "dump": str(dump), "log": str(log)}
        began = time.monotonic()
        self._process.stdin.write((json.dumps(request) + "\n").encode())
        await self._process.stdin.drain()
        answer = json.loads(await asyncio.wait_for(self._process.stdout.readline(), RUN_TIMEOUT))
        returncode = -answer["signal"] if "signal" in answer else answer["code"]
        self.seconds.append(round(time.monotonic() - began, 1))
        return Run(returncode, trace.read_text().splitlines() if trace.exists() else [], log,
                   json.loads(dump.read_text()) if dump.exists() else None, self.seconds[-1])


class Store:
    """One kind of memory store and how a fresh bot on it is configured."""

    def __init__(self, name: str, workdir: Path, postgres: PostgresServer | None) -> None:
        self.name = name
        self._workdir = workdir
        self._postgres = postgres
        self._count = 0

    def fresh(self) -> tuple[dict[str, str], Path]:
        """The environment of a bot with nothing stored yet, and its DATA_DIR."""
        self._count += 1
        data = self._workdir / f"data{self._count}"
        shutil.rmtree(data, ignore_errors=True)
        env = {"DATA_DIR": str(data), "EMBEDDER_BACKEND": "sentence_transformers", "WRITEBACK_QUIET_SECONDS": "0",
               "WRITEBACK_LEASE_SECONDS": LEASE_SECONDS, "MEMORY_TTL_DAYS": "30", "LOG_LEVEL": "DEBUG",
               "OPENAI_API_KEY": logscan.OPENAI_API_KEY,
               "SLACK_BOT_TOKEN": logscan.SLACK_BOT_TOKEN, "SLACK_SIGNING_SECRET": logscan.SLACK_SIGNING_SECRET,
               "SLACK_APP_TOKEN": logscan.SLACK_APP_TOKEN, "DISCORD_TOKEN": logscan.DISCORD_TOKEN}
        if self.name == "pgvector":
            assert self._postgres is not None, "the pgvector store needs a PostgreSQL server"
            url = logscan.with_password(self._postgres.new_database())
            env |= {"DATABASE_URL": url, "VECTOR_STORE": "pgvector", "PGVECTOR_URL": url}
        return env, data


# --- what the end state must be


def expected(plan: Scenario) -> Counter[Entry]:
    """The memories the scenario leaves: each live message once and its facts, as said or as superseded."""
    entries: Counter[Entry] = Counter()
    for said in plan.live:
        entries[(said.user, "message", said.message_id, said.text, False)] += 1
        for fact in said.facts:
            if fact not in said.replaced:
                entries[(said.user, "fact", said.message_id, fact, fact in said.superseded)] += 1
    return entries


def dead_words(plan: Scenario) -> set[str]:
    """The canaries of texts nothing may be left of."""
    return {word for said in plan.dead for word in plan.canaries.words if word in said.text}


def check_state(plan: Scenario, dump: dict[str, Any], data: Path) -> dict[str, list[str]]:
    """The end state's violations by what they are: lost, duplicated, resurrected (or unexpected), unfinished
    deletions, a queue not empty, an inconsistent store, a SQLite file failing its integrity check."""
    want = expected(plan)
    have: Counter[Entry] = Counter((m["user"], m["kind"], m["message_id"], m["text"], m["superseded"])
                                   for m in dump["memories"])
    dead = dead_words(plan)
    dead_messages = {(s.user, s.message_id) for s in plan.dead} - {(s.user, s.message_id) for s in plan.live}
    extra = [e for e in have if want[e] == 0]
    back = [e for e in extra if any(w in e[3] for w in dead) or (e[0], e[2]) in dead_messages]
    user_keys = {f"console:local:{user}": user for user in ("ana", "ben", "cal")}
    learned_from = {(user_keys.get(key, key), message_id): forgetting for message_id, key, forgetting
                    in dump["learned_from"]}
    # (an expired message's row stays: it holds ids only, and the purge deletes memories, not messages)
    forgotten = {(s.user, s.message_id) for s in plan.dead if not s.old} - {(s.user, s.message_id) for s in plan.live}
    ids = {m["id"] for m in dump["memories"]}
    return {
        "lost": [f"lost {e}" for e in want if have[e] < want[e]],
        "duplicated": [f"{have[e]} times {e}" for e in have if have[e] > max(1, want[e])],
        "resurrected": [f"back {e}" for e in back],
        "unexpected": [f"unexpected {e}" for e in extra if e not in back],
        "deletion unfinished": [f"{m} still marked forgetting" for m, f in learned_from.items() if f != "0"]
        + [f"{m} of a deleted, edited or forgotten message left in learned_from" for m in learned_from
           if m in forgotten],
        "queue": ([f"{dump['pending']} exchange(s) still queued"] if dump["pending"] else [])
        + [f"set aside: {error[:200]}" for error in dump["set_aside"]],
        "store inconsistent": ([] if dump["points"] == len(dump["memories"]) else [
            f"the store counts {dump['points']} points but lists {len(dump['memories'])}"])
        + [f"{m['user']}'s memory {m['id']} from {m['message_id']} has no learned_from row"
           for m in dump["memories"] if (m["user"], m["message_id"]) not in learned_from]
        + [f"mem0 history keeps forgotten memory {i}" for i in dump["history_ids"] if i not in ids],
        "integrity": [f"{path}: {result}" for path, result in sqlite_integrity(data).items() if result != "ok"],
    }


def count_state(table: Table, store: str, family: str, point: str, plan: Scenario, run: Run, data: Path) -> None:
    """Count one kill point (or the chain, or the run without a kill): its family's row, and each store's rows
    of exchanges learned exactly once, forgotten memories staying forgotten and SQLite files checked."""
    if run.returncode != 0 or run.dump is None:
        tail = run.log.read_text(errors="replace").splitlines()[-3:] if run.log.exists() else []
        table.check(f"{store}: {family}", False, f"{point}: the restart ended with {run.returncode}: "
                    f"{' | '.join(tail)[:400]}")
        return
    found = check_state(plan, run.dump, data)
    table.check(f"{store}: {family}", not any(found.values()),
                f"{point}: " + "; ".join(f"{what}: {', '.join(v)[:600]}" for what, v in found.items() if v))
    exchanges = len(plan.live)
    table.add(f"{store}: exchanges learned exactly once", exchanges,
              [f"{point}: {v}" for v in found["lost"] + found["duplicated"]])
    table.add(f"{store}: forgotten stays forgotten (deleted, edited, forget-all, expired)", len(plan.dead),
              [f"{point}: {v}" for v in found["resurrected"] + found["unexpected"]])
    table.add(f"{store}: SQLite files pass integrity_check", len(sqlite_integrity(data)),
              [f"{point}: {v}" for v in found["integrity"]])


def sqlite_integrity(data: Path) -> dict[str, str]:
    """`PRAGMA integrity_check` of every SQLite file under `data` (bot.sqlite3, mem0's history, Qdrant's)."""
    results = {}
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        with open(path, "rb") as file:
            if file.read(16) != b"SQLite format 3\x00":
                continue
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                results[str(path.relative_to(data))] = str(db.execute("PRAGMA integrity_check").fetchone()[0])
        except sqlite3.Error as exc:
            results[str(path.relative_to(data))] = f"cannot check: {exc}"
    return results


# --- where a kill left the scenario


def next_start(plan: Scenario, start: int, trace: list[str]) -> int:
    """The first event the restart plays after a run from `start` was killed (see the module docstring)."""
    open_event, steps = None, []
    ended = start - 1
    for line in trace:
        word, _, number = line.partition(" ")
        if word == "begin":
            open_event, steps = int(number), []
        elif word == "end":
            open_event, ended = None, int(number)
        elif word in ("recover", "finish"):
            open_event = None
        else:
            steps.append(line)
    if open_event is None:
        return ended + 1
    committed_by = COMMITTED_BY.get(plan.events[open_event].kind)
    return open_event + 1 if committed_by in steps else open_event


def kill_points(plan: Scenario, trace: list[str]) -> list[Point]:
    """From a full run's trace: every step's first time in each kind of event (and in the restart's recovery and
    the final one) and its last time; every step's first such point comes before any step's second one, and so
    on, so that a run cut short (`limit`) still covers every step."""
    counts: Counter[str] = Counter()
    context = "start"
    firsts: dict[tuple[str, str], Point] = {}
    for line in trace:
        word, _, number = line.partition(" ")
        if word == "begin":
            context = plan.events[int(number)].name
            continue
        if word in ("end", "recover", "finish", "finished"):
            context = word
            continue
        counts[line] += 1
        firsts.setdefault((line, context), Point(line, counts[line]))
    points = sorted(set(firsts.values()) | {Point(step, n) for step, n in counts.items()},
                    key=lambda p: (p.step, p.nth))
    rank = {point: sum(1 for other in points if other.step == point.step and other.nth < point.nth)
            for point in points}
    return sorted(points, key=lambda p: (rank[p], p.step))


# --- the runs


def log_scan(logs: Table, store: str, plan: Scenario, run: Run) -> None:
    logscan.scan_file(logs, f"{store}: bot process logs (lines)", run.log, plan.canaries,
                      extra=[s.text for s in plan.all_said()])


async def full_points(store: Store, server: ForkServer, plan: Scenario, table: Table, logs: Table,
                      limit: int | None, progress: Callable[[str], None]) -> None:
    """The trace run, then one fresh bot per kill point: killed there, restarted, checked."""
    env, data = store.fresh()
    trace_run = await server.run(env, 0, "trace")
    log_scan(logs, store.name, plan, trace_run)
    count_state(table, store.name, "no kill (the trace run)", "no kill", plan, trace_run, data)
    points = kill_points(plan, trace_run.trace)[:limit]
    progress(f"{store.name}: {len(points)} kill points")
    for number, point in enumerate(points, 1):
        await kill_and_restart(store, server, plan, table, logs, point)
        progress(f"{store.name}: {number}/{len(points)} {point} ({len(table.violations)} violations so far)")


async def kill_and_restart(store: Store, server: ForkServer, plan: Scenario, table: Table, logs: Table,
                           point: Point) -> None:
    env, data = store.fresh()
    killed = await server.run({**env, CRASH_AT: str(point)}, 0, "killed")
    log_scan(logs, store.name, plan, killed)
    if killed.returncode != -9:
        table.check(f"{store.name}: {point.family}", False,
                    f"{point}: point not reached (the run ended with {killed.returncode})")
        return
    restart = await server.run(env, next_start(plan, 0, killed.trace), "restart")
    log_scan(logs, store.name, plan, restart)
    count_state(table, store.name, point.family, str(point), plan, restart, data)


async def ci_chain(store: Store, server: ForkServer, plan: Scenario, table: Table, logs: Table) -> None:
    """One bot killed at each of CI_POINTS in turn (each restart armed with the next), then run to the end."""
    env, data = store.fresh()
    start = 0
    for number, text in enumerate(CI_POINTS):
        point = Point.parse(text)
        run = await server.run({**env, CRASH_AT: str(point)}, start, f"chain{number}")
        log_scan(logs, store.name, plan, run)
        table.check(f"{store.name}: {point.family} (killed there)", run.returncode == -9,
                    f"{point}: point not reached (the run ended with {run.returncode})")
        if run.returncode != -9:
            break
        start = next_start(plan, start, run.trace)
    final = await server.run(env, start, "chain-end")
    log_scan(logs, store.name, plan, final)
    count_state(table, store.name, f"after the chain of {len(CI_POINTS)} kills", "chain", plan, final, data)


async def run(workdir: Path, *, full: bool, postgres: PostgresServer | None = None,
              limit: int | None = None, progress: Callable[[str], None] = lambda _: None) -> tuple[Table, Table]:
    """Section 1: (the crash points' table, the log scan of every bot process they ran). `limit`: at most this
    many kill points per store in the full run."""
    plan = scenario()
    table, logs = Table(SECTION), Table(f"5. Logs and secrets ({SECTION.lower()})")
    names = ["embedded-qdrant"] + (["pgvector"] if postgres is not None else [])
    if postgres is None:
        table.check("pgvector: store available", False, "no PostgreSQL server given: pgvector not tested")

    async def one_store(name: str) -> None:
        folder = workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        store = Store(name, folder, postgres)
        async with ForkServer(folder) as server:
            if full:
                await full_points(store, server, plan, table, logs, limit, progress)
            else:
                await ci_chain(store, server, plan, table, logs)
        table.data[f"{name}: seconds per bot run"] = server.seconds

    await asyncio.gather(*(one_store(name) for name in names))
    return table, logs
