"""The process the crash tests kill: a MemoryBot with a scripted model playing a fixed scenario
(`python -m tests.reliability.crash_driver`).

The scenario (`scenario()`) is a few users' messages, each with facts derived from it (several per message;
profile facts and a negation that supersede earlier ones), a long message kept as several passages, a message
said long ago (past its retention, so the purge has work), a deletion, an edit, a forget-all and a message after
it, then the retention purge. Each event is drained before the next, so every step of learning runs inside the
event that caused it. The driver writes `begin N` and `end N` around event N into the trace file
(MEMORYBOT_CRASH_TRACE, where memory/faults.py writes every step reached), so the runner
(tests/reliability/crash_points.py) knows which event a kill interrupted and which of its steps were reached.

    python -m tests.reliability.crash_driver --start N [--dump FILE]

plays the events from N (a restart after a kill: starting the bot resumes its queue; the driver then finishes
what recovery does in the background at every start, deleting what a crash interrupted and purging, before it
goes on), then drains and, with --dump, writes the state of the store and the bot database as JSON. The settings
come from the environment (DATA_DIR, DATABASE_URL, VECTOR_STORE, PGVECTOR_URL, MEMORY_TTL_DAYS, LOG_LEVEL ...);
logs go to stderr as `adapters/cli.setup_logging` writes them.

    python -m tests.reliability.crash_driver --serve

is the same driver as a fork server: importing mem0, torch and sentence-transformers takes longer than a whole
scenario, so it imports them once and forks a child for each run it is asked for on stdin (one JSON line: env,
start, dump, log), and answers how the child ended (one JSON line: the signal that killed it, or its exit
code). Each child is a real process of its own, killed for real; only the imports are shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.cli import setup_logging
from bot.app import MemoryBot
from bot.llm.base import ChatMessage, GenerationParams
from bot.message import IncomingMessage, MessageRef, UserRef
from bot.settings import load_settings
from memory import faults
from memory.faults import CRASH_TRACE
from memory.records import KINDS
from tests.bot.helpers import RecordingReply
from tests.fakes.model import ScriptedBackend
from tests.reliability.logscan import Canaries

PLATFORM, WORKSPACE = "console", "local"
USERS = ("ana", "ben", "cal")
FILLER_SENTENCES = 40  # the long message: enough sentences for more than one passage


@dataclass(frozen=True)
class Said:
    """One text a user said and the facts the scripted model extracts from it; some of them a later message
    makes untrue."""

    user: str
    message_id: str
    text: str
    facts: tuple[str, ...]
    old: bool = False  # said long before its retention ran out
    replaced: tuple[str, ...] = ()  # facts a later message's fact takes the place of (same id, its text)
    superseded: tuple[str, ...] = ()  # facts a later message's fact marks superseded (kept, not recalled)


@dataclass(frozen=True)
class Event:
    """One thing that happens: a message (`said`), its deletion, its edit (`said` is the new text), a user's
    forget-all, or the retention purge."""

    kind: str  # "message", "delete", "edit", "forget_all", "purge"
    user: str = ""
    said: Said | None = None
    message_id: str = ""
    label: str = ""  # what is particular about it (the kill points are chosen per step and label)

    @property
    def name(self) -> str:
        return self.label or self.kind


@dataclass
class Scenario:
    events: list[Event]
    canaries: Canaries
    # texts nothing must be left of at the end: deleted, edited away, forgotten, expired
    dead: list[Said] = field(default_factory=list)
    live: list[Said] = field(default_factory=list)

    def all_said(self) -> Iterator[Said]:
        for event in self.events:
            if event.said is not None:
                yield event.said


def scenario() -> Scenario:
    """The fixed scenario, the same in every process (its canaries are seeded)."""
    c = Canaries(seed=17)
    w = [c.word() for _ in range(12)]
    filler = " ".join(f"The garden path bends past the {w[3]} shed and the river number {i}."
                      for i in range(FILLER_SENTENCES))
    ana1 = Said("ana", "m1", f"I collect {w[0]} stamps. I live in Lisbon. I drink coffee.",
                (f"The user collects {w[0]} stamps.", "The user lives in Lisbon.", "The user drinks coffee."),
                replaced=("The user lives in Lisbon.", "The user drinks coffee."))
    ben2 = Said("ben", "m2", f"I grow {w[1]} tomatoes. I work as a baker. {filler}",
                (f"The user grows {w[1]} tomatoes.", "The user works as a baker."))
    cal3 = Said("cal", "m3", f"I paint {w[2]} murals. I live in Oslo.",
                (f"The user paints {w[2]} murals.", "The user lives in Oslo."))
    ana4 = Said("ana", "m4", f"I moved to Porto. I brew {w[4]} tea. I drink black coffee.",
                ("The user moved to Porto.", f"The user brews {w[4]} tea.", "The user drinks black coffee."),
                superseded=("The user drinks black coffee.",))
    ben5 = Said("ben", "m5", f"I once rode a {w[5]} camel.", (f"The user once rode a {w[5]} camel.",), old=True)
    cal6 = Said("cal", "m6", f"I sing {w[6]} songs.", (f"The user sings {w[6]} songs.",))
    cal6_edited = Said("cal", "m6", f"I sing {w[7]} ballads.", (f"The user sings {w[7]} ballads.",))
    ben8 = Said("ben", "m8", f"I keep {w[8]} bees.", (f"The user keeps {w[8]} bees.",))
    cal9 = Said("cal", "m9", f"I knit {w[9]} scarves.", (f"The user knits {w[9]} scarves.",))
    ana10 = Said("ana", "m10", f"I don't drink coffee anymore. I read {w[10]} novels.",
                 ("The user doesn't drink coffee anymore.", f"The user reads {w[10]} novels."))
    events = [
        Event("message", said=ana1), Event("message", said=ben2, label="long message"),
        Event("message", said=cal3), Event("message", said=ana4, label="profile update"),
        Event("message", said=ben5, label="expired message"), Event("message", said=cal6),
        Event("message", said=ben8),
        Event("delete", user="ben", message_id="m2"),
        Event("edit", said=cal6_edited),
        Event("forget_all", user="cal"),
        Event("message", said=cal9), Event("message", said=ana10, label="negation supersedes two"),
        Event("purge"),
    ]
    return Scenario(events, c, dead=[ben2, ben5, cal3, cal6, cal6_edited],
                    live=[ana1, ana4, ben8, cal9, ana10])


class DerivedFacts(ScriptedBackend):
    """The scripted model: an extraction answers the facts of the scenario text it is asked about."""

    def __init__(self, said: list[Said]) -> None:
        super().__init__("Noted, thank you.")
        self._said = sorted(said, key=lambda s: len(s.text), reverse=True)  # a text inside another: the longer

    def stream(self, messages: list[ChatMessage], params: GenerationParams,
               should_stop: Callable[[], bool]) -> Iterator[str]:
        if params.json_schema is not None:
            asked = messages[-1].content
            self.facts = next((list(s.facts) for s in self._said if s.text in asked), [])
        return super().stream(messages, params, should_stop)


def incoming(said: Said, *, edited: bool = False) -> IncomingMessage:
    now = datetime.now(UTC)
    sent_at = now - timedelta(days=400 if said.old else 1)
    return IncomingMessage(platform=PLATFORM, workspace=WORKSPACE, channel_id=f"dm-{said.user}", user_id=said.user,
                           user_name=said.user.title(), text=said.text, message_id=said.message_id,
                           is_direct=True, link=None, sent_at=sent_at, edited_at=now if edited else None)


def ref_of(user: str, message_id: str) -> MessageRef:
    return MessageRef(PLATFORM, WORKSPACE, f"dm-{user}", message_id)


class Journal:
    """`begin N` / `end N` lines in the trace file, beside the steps memory/faults.py writes there."""

    def __init__(self) -> None:
        path = os.environ.get(CRASH_TRACE)
        self._file = open(path, "a", buffering=1) if path else None  # noqa: SIM115 - open for the run

    def mark(self, what: str) -> None:
        if self._file is not None:
            self._file.write(f"{what}\n")


async def play(bot: MemoryBot, event: Event) -> None:
    if event.kind == "message" and event.said:
        await bot.handle(incoming(event.said), RecordingReply())
    elif event.kind == "delete":
        await bot.forget_message(ref_of(event.user, event.message_id))
    elif event.kind == "edit" and event.said:
        msg = incoming(event.said, edited=True)
        await bot.message_edited(msg, msg.ref)
    elif event.kind == "forget_all":
        await bot.memories.forgetting.forget_all(UserRef(PLATFORM, WORKSPACE, event.user))
    elif event.kind == "purge":
        await bot.memories.forgetting.purge_expired()
    await bot.writeback.drain(timeout=120)


async def recover(bot: MemoryBot) -> None:
    """What every start does in the background (MemoryBot._apply_retention), awaited: the queue drained,
    deletions a crash interrupted finished, the retention purge."""
    await bot.writeback.drain(timeout=120)
    await bot.memories.forgetting.finish_forgetting()
    await bot.memories.forgetting.purge_expired()
    await bot.writeback.drain(timeout=120)


async def dump(bot: MemoryBot) -> dict[str, Any]:
    """Every user's memories as stored (superseded and expired ones too) and the bot database's rows."""
    memories = []
    for user in USERS:
        key = UserRef(PLATFORM, WORKSPACE, user).key
        for record in await bot.store.list(key, include_superseded=True, include_expired=True, kinds=KINDS):
            memories.append({"user": user, "id": record.id, "kind": record.kind, "text": record.text,
                             "message_id": record.source.message_id, "superseded": bool(record.superseded_by),
                             "attribute": record.attribute})
    sql = bot.db.sql
    learned_from = [list(map(str, row)) for row in await sql.fetchall(
        "SELECT message_id, user_key, forgetting FROM learned_from ORDER BY message_id, user_key")]
    return {
        "memories": memories,
        "points": await bot.store.count_points(),
        "pending": await bot.db.pending_count(),
        "set_aside": [str(row[0]) for row in await sql.fetchall("SELECT error FROM failed_exchanges")],
        "learned_from": learned_from,
        "history_ids": sorted({str(row["memory_id"]) async for page in bot.store.history_rows() for row in page}),
        "keeps_history": bot.store.keeps_history,
    }


async def main(start: int, dump_to: Path | None) -> None:
    settings = load_settings(env_file=None)
    setup_logging(settings, quiet_console=False)
    plan = scenario()
    journal = Journal()
    async with MemoryBot(settings, backend=DerivedFacts(list(plan.all_said()))) as bot:
        journal.mark("recover")
        await recover(bot)
        for index in range(start, len(plan.events)):
            journal.mark(f"begin {index}")
            await play(bot, plan.events[index])
            journal.mark(f"end {index}")
        journal.mark("finish")
        await recover(bot)
        journal.mark("finished")
        if dump_to is not None:
            dump_to.write_text(json.dumps(await dump(bot), indent=1))


def serve() -> None:
    """The fork server (see the module docstring)."""
    import mem0  # noqa: F401 - the slow imports, done once (MEM0_DIR is set by the runner)
    import sentence_transformers  # noqa: F401

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status)
        answer = {"signal": os.WTERMSIG(status)} if killed else {"code": os.waitstatus_to_exitcode(status)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def _child(request: dict[str, Any]) -> None:
    """A forked run: its own environment, stderr to its log, fault injection read again (memory/faults.py reads
    the environment once, at import: in the server, before this run's was set)."""
    code = 1
    try:
        os.environ.update(request["env"])
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        faults._ARMED = faults._armed()  # noqa: SLF001 - a new process as far as faults are concerned
        dump_to = Path(request["dump"]) if request.get("dump") else None
        asyncio.run(main(int(request["start"]), dump_to))
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=0, help="the first event to play")
    parser.add_argument("--dump", type=Path, help="write the final state here as JSON")
    parser.add_argument("--serve", action="store_true", help="run as a fork server (see the docstring)")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = _arguments()
    if arguments.serve:
        serve()
    else:
        asyncio.run(main(arguments.start, arguments.dump))
