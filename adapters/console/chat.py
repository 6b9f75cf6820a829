"""`memorybot chat`: talk to the bot in a terminal, with streamed replies and memory commands."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime
from typing import TextIO

from bot.app import MemoryBot
from bot.errors import UserError
from bot.message import IncomingMessage
from memory.records import MemoryRecord

_log = logging.getLogger(__name__)

HELP = """Commands:
  /memories            what I remember about you
  /remember TEXT       remember something exactly as you say it
  /search QUERY        search your memories
  /forget ID           forget one memory
  /forget-all          forget everything about you (asks to confirm)
  /export              all your memories with their sources, as JSON
  /pause, /resume      stop or restart learning about you
  /why                 which memories my last reply used
  /quit                leave (Ctrl-D works too)"""


class ConsoleReply:
    """Prints replies; a streamed reply appears token by token."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self._out = out

    async def send(self, text: str) -> None:
        print(f"bot> {text}", file=self._out, flush=True)

    async def stream(self, deltas: AsyncIterator[str]) -> str:
        text = ""
        print("bot> ", end="", file=self._out, flush=True)
        try:
            async for delta in deltas:
                text += delta
                print(delta, end="", file=self._out, flush=True)
        finally:
            print(file=self._out, flush=True)
        return text

    def typing(self) -> AbstractAsyncContextManager[None]:
        return nullcontext()


def format_record(record: MemoryRecord) -> str:
    when = record.created_at.date().isoformat() if record.created_at else "unknown date"
    where = f"{record.source.platform}/{record.source.workspace}/{record.source.channel}"
    link = f" {record.source.link}" if record.source.link else ""
    how = "you told me to remember" if record.source.origin == "explicit" else "learned"
    return f"[{record.id}] {record.shown}\n      {how} {when} in {where}{link}"


class ConsoleSession:
    def __init__(self, bot: MemoryBot, user: str, out: TextIO = sys.stdout) -> None:
        self._bot = bot
        self._user = user
        self._out = out
        self._reply = ConsoleReply(out)
        self._ids = itertools.count(1)
        self._confirm_forget_all = False

    def message(self, text: str) -> IncomingMessage:
        return IncomingMessage(
            platform="console", workspace="local", channel_id="terminal", user_id=self._user,
            user_name=self._user, text=text, message_id=f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{next(self._ids)}",
            is_direct=True, addressed=True,
        )

    def say(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    async def on_line(self, line: str) -> bool:
        """Handle one input line; False means leave."""
        msg = self.message(line)
        command, _, arg = line.strip().partition(" ")
        if command in ("/quit", "/exit"):
            return False
        if not command.startswith("/") or command == "/":
            self._confirm_forget_all = False
            await self._bot.handle(msg, self._reply)
            return True
        try:
            await self.command(command, arg.strip(), msg)
        except UserError as exc:
            self.say(str(exc))
        return True

    async def command(self, command: str, arg: str, msg: IncomingMessage) -> None:
        memories = self._bot.memories
        user = msg.user
        confirming, self._confirm_forget_all = self._confirm_forget_all, False
        if command == "/memories":
            page = await memories.list(user, page=int(arg) if arg.isdigit() else 1)
            if not page.total:
                self.say("I don't remember anything about you yet.")
                return
            self.say(f"What I remember about you (page {page.page} of {page.pages}, {page.total} in all):")
            for record in page.records:
                self.say("  " + format_record(record))
        elif command == "/remember":
            record = await memories.remember(msg, arg)
            self.say(f"I'll remember that. [{record.id}]")
        elif command == "/search":
            found = await memories.search(msg, arg)
            self.say("\n".join("  " + format_record(r) for r in found) or "Nothing matches that.")
        elif command == "/forget":
            ok = await memories.forget(user, arg)
            self.say("Forgotten." if ok else f"I have no memory with id {arg!r} for you.")
        elif command == "/forget-all":
            if arg == "confirm" or confirming and arg in ("yes", "y"):
                count = await memories.forget_all(user)
                self.say(f"Done: I forgot all {count} memories about you.")
            else:
                self._confirm_forget_all = True
                self.say("This deletes everything I remember about you. Type `/forget-all yes` to confirm.")
        elif command == "/export":
            data = await memories.export(user)
            if not data["memories"]:
                self.say("There is nothing to export: I don't remember anything about you yet.")
            else:
                self.say(json.dumps(data, indent=2, ensure_ascii=False))
        elif command == "/pause":
            await memories.pause(user)
            self.say("Paused: I won't learn anything new about you until you type /resume.")
        elif command == "/resume":
            await memories.resume(user)
            self.say("Resumed: I'll remember what you tell me again.")
        elif command == "/why":
            used = memories.why(user)
            if not used:
                self.say("My last reply didn't use any memories.")
            else:
                self.say("My last reply used these memories:")
                for record in used:
                    self.say("  " + format_record(record))
        elif command == "/help":
            self.say(HELP)
        else:
            self.say(f"Unknown command {command}. " + HELP)


async def run_chat(bot: MemoryBot, user: str) -> None:
    session = ConsoleSession(bot, user)
    session.say(f"memorybot: chatting as {user!r}. Type /help for commands, /quit or Ctrl-D to leave.")
    loop = asyncio.get_running_loop()
    while True:
        try:
            line = await loop.run_in_executor(None, input, "you> ")
        except EOFError:
            session.say("")
            break
        if not await session.on_line(line):
            break
    pending = await bot.db.pending_count()
    if pending:
        session.say(f"({pending} exchange(s) still to learn from; they are kept and finished next time.)")
