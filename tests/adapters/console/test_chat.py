"""The terminal chat against the real core (scripted model): messages, every command, confirmations."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator

import pytest

from adapters.console.chat import ConsolePlatform, ConsoleSession
from adapters.platform import serve
from bot.app import MemoryBot
from bot.commands import COMMANDS, Command
from bot.errors import COMMAND_FAILED
from tests.bot.helpers import sample_arg
from tests.fakes.model import ScriptedBackend


class Terminal:
    def __init__(self, bot: MemoryBot) -> None:
        self.bot = bot
        self.out = io.StringIO()
        self.session = ConsoleSession(bot, "dana", self.out)

    async def type(self, line: str) -> str:
        """Enter one line; what the bot printed in answer."""
        start = len(self.out.getvalue())
        assert await self.session.on_line(line)
        return self.out.getvalue()[start:]


@pytest.fixture
async def terminal(make_settings) -> AsyncIterator[Terminal]:
    async with MemoryBot(make_settings(), backend=ScriptedBackend(reply="Hello Dana!")) as bot:
        yield Terminal(bot)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
async def test_every_command_answers(terminal: Terminal, command: Command) -> None:
    answer = await terminal.type(f"/{command.name} {sample_arg(command)}".strip())
    assert answer.strip() and COMMAND_FAILED not in answer and "don't know that command" not in answer


async def test_remember_list_search_forget(terminal: Terminal) -> None:
    remembered = await terminal.type("/remember I like green tea")
    memory_id = remembered.split("(id ")[1].rstrip(")\n")
    listing = await terminal.type("/memories")
    assert f"1. {memory_id} I like green tea" in listing and "page 1 of 1, 1 in all" in listing
    assert "I like green tea" in await terminal.type("/search tea")
    assert "Give a page number, e.g. /memories 2." in await terminal.type("/memories two")
    assert await terminal.type(f"/forget {memory_id}") == f"Forgotten: {memory_id}.\n"
    assert "no memory" in await terminal.type(f"/forget {memory_id}")


async def test_forget_all_asks_first(terminal: Terminal) -> None:
    await terminal.type("/remember I like tea")
    await terminal.type("/remember I live in Lyon")
    assert "Forget all 2 memories I have about you here?" in await terminal.type("/forget-all")
    assert "Cancelled: nothing was forgotten." in await terminal.type("/memories")  # anything else cancels
    await terminal.type("/forget-all")
    assert await terminal.type("yes") == "Done: I forgot 2 memories about you here.\n"
    assert "I don't remember anything" in await terminal.type("/forget-all")


async def test_forget_all_confirmed_by_the_command_itself(terminal: Terminal) -> None:
    await terminal.type("/remember I like tea")
    await terminal.type("/forget-all")
    assert "forgot 1 memory about you" in await terminal.type("/forget-all yes")


async def test_export_prints_the_json(terminal: Terminal) -> None:
    assert "nothing to export" in await terminal.type("/export")
    await terminal.type("/remember I like tea")
    caption, _, body = (await terminal.type("/export")).partition("\n")
    assert "1 memory" in caption
    assert [m["text"] for m in json.loads(body)["memories"]] == ["I like tea"]


async def test_a_message_gets_a_reply_and_an_unknown_command_the_list(terminal: Terminal) -> None:
    assert await terminal.type("hi there") == "bot> Hello Dana!\n"
    unknown = await terminal.type("/frobnicate")
    assert "don't know that command" in unknown and "/memories [PAGE]" in unknown


async def test_quit_leaves(terminal: Terminal) -> None:
    assert not await terminal.session.on_line("/quit")


async def test_typed_text_never_confirms_by_itself(terminal: Terminal) -> None:
    await terminal.type("/remember I like tea")
    assert "Forget all" in await terminal.type("/forget-all confirm")
    assert "Forget all" in await terminal.type("/forget-all confirm")  # a new question, not a yes
    assert "I like tea" in await terminal.type("/memories")


async def test_a_message_while_asked_cancels_and_is_answered(terminal: Terminal) -> None:
    await terminal.type("/remember I like tea")
    await terminal.type("/forget-all")
    answer = await terminal.type("hello")
    assert answer.startswith("Cancelled: nothing was forgotten.\n") and "Hello Dana!" in answer


async def test_the_chat_platform_serves_until_the_input_ends(make_settings, monkeypatch, capsys) -> None:
    lines = iter(["hello", "/remember I like tea"])

    def typed(prompt: str = "") -> str:
        print(prompt, end="")
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", typed)
    await serve(ConsolePlatform("dana"), make_settings(), backend=ScriptedBackend(reply="Hi!"))
    out = capsys.readouterr().out
    assert "chatting as 'dana'" in out and "bot> Hi!" in out and "I'll remember that: I like tea" in out


async def test_the_chat_platform_stops_when_told(make_settings, monkeypatch) -> None:
    stop = asyncio.Event()
    monkeypatch.setattr("builtins.input", lambda prompt="": (stop.set(), "")[1] or _block())
    serving = serve(ConsolePlatform("dana"), make_settings(), backend=ScriptedBackend(), stop=stop)
    await asyncio.wait_for(serving, 300)  # a guard against a hang, not a speed bound


def _block() -> str:
    threading.Event().wait()  # a terminal nobody types in (the reading thread is a daemon)
    return ""
