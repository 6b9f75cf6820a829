"""`memorybot chat`: talk to the bot in a terminal, with streamed replies and memory commands."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import itertools
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime
from typing import TextIO

from bot.app import MemoryBot
from bot.commands import Attachment, Command, Confirm, Dialect
from bot.message import IncomingMessage


class ConsoleReply:
    """Prints replies; a streamed reply appears token by token."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout

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


def _usage(command: Command, value: str | None) -> str:
    if value is None and command.arg is not None:
        value = command.arg.name.upper() if command.arg.required else f"[{command.arg.name.upper()}]"
    return f"/{command.name}" + (f" {value}" if value else "")


def _same(text: str) -> str:
    return text


CONSOLE = Dialect(code=_same, bold=_same, escape=_same, link=_same, date=lambda when: when.date().isoformat(),
                  usage=_usage, scope=lambda user: "here")
YES = ("yes", "y")


class ConsoleSession:
    """One person at the terminal: lines starting with `/` are commands, anything else is a message."""

    def __init__(self, bot: MemoryBot, user: str, out: TextIO | None = None) -> None:
        self._bot = bot
        self._user = user
        self._out = out or sys.stdout
        self._reply = ConsoleReply(out)
        self._ids = itertools.count(1)
        self._confirming: Confirm | None = None

    def message(self, text: str) -> IncomingMessage:
        return IncomingMessage(
            platform="console", workspace="local", channel_id="terminal", user_id=self._user,
            user_name=self._user, text=text, message_id=f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{next(self._ids)}",
            is_direct=True,
        )

    def say(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    async def on_line(self, line: str) -> bool:
        """Handle one input line; False means leave."""
        command, _, arg = line.strip().partition(" ")
        if command in ("/quit", "/exit"):
            return False
        confirming, self._confirming = self._confirming, None
        if confirming and (line.strip().lower() in YES
                           or command == f"/{confirming.command}" and arg.strip().lower() in YES):
            await self.command(confirming.command, "", line, confirmed=True)
            return True
        if confirming:
            self.say(confirming.cancelled)
        if command.startswith("/") and command != "/":
            await self.command(command[1:], arg, line)
        else:
            await self._bot.handle(self.message(line), self._reply)
        return True

    async def command(self, name: str, arg: str, line: str, *, confirmed: bool = False) -> None:
        result = await self._bot.command(name, arg, self.message(line), CONSOLE, confirmed=confirmed)
        if isinstance(result, Confirm):
            self._confirming = result
            self.say(f"{result.question} Type `yes` to confirm.")
        elif isinstance(result, Attachment):
            self.say(f"{result.text}\n{result.content}")
        else:
            self.say(result.text)


class _Lines:
    """Lines typed at the terminal, read on a daemon thread one at a time when asked for (so the prompt appears
    after the bot's answer), which never holds up the exit."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wanted = threading.Semaphore(0)
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        threading.Thread(target=self._read, daemon=True, name="terminal-input").start()

    def _read(self) -> None:
        while True:
            self._wanted.acquire()
            try:
                line: str | None = input("you> ")
            except EOFError:
                line = None
            self._loop.call_soon_threadsafe(self._lines.put_nowait, line)
            if line is None:
                return

    async def next(self, stop: asyncio.Event) -> str | None:
        """The next line; None at the end of input (Ctrl-D) or once `stop` is set."""
        if stop.is_set():
            return None
        self._wanted.release()
        reading, stopping = asyncio.create_task(self._lines.get()), asyncio.create_task(stop.wait())
        await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not reading.done():
            reading.cancel()
            return None
        return reading.result()


async def run_chat(bot: MemoryBot, user: str, stop: asyncio.Event) -> None:
    session = ConsoleSession(bot, user)
    session.say(f"memorybot: chatting as {user!r}. Type /help for commands, /quit or Ctrl-D to leave.")
    lines = _Lines()
    while (line := await lines.next(stop)) is not None and await session.on_line(line):
        pass
    if line is None:
        session.say("")
    pending = await bot.db.pending_count()
    if pending:
        session.say(f"({pending} exchange(s) still to learn from; they are kept and finished next time.)")


class ConsolePlatform:
    """`memorybot chat` (see `adapters/platform.py`): platform `console`, workspace `local`."""

    name = "chat"
    help = "chat in the terminal"
    interactive = True

    def __init__(self, user: str) -> None:
        self.user = user

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--user", default=None, help="who you are (default: your login name)")

    @classmethod
    def from_env(cls, env_file: str | None, args: argparse.Namespace) -> ConsolePlatform:
        return cls(args.user or getpass.getuser())

    async def prepare(self) -> None:
        print("Loading the model and memory (the first start prepares the model: about a minute)...", flush=True)

    async def serve(self, bot: MemoryBot, stop: asyncio.Event) -> None:
        await run_chat(bot, self.user, stop)
