"""Fixtures: a fake Discord on 127.0.0.1 and the real bot (MemoryBot + DiscordClient) connected to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import discord
import pytest
import yarl

from adapters.discord.client import DiscordClient
from adapters.discord.settings import DiscordSettings
from bot.app import MemoryBot
from bot.message import IncomingMessage, MessageRef, ReplyTarget
from bot.settings import Secret
from tests.adapters.discord.fake_discord import FakeDiscord, Recorded
from tests.conftest import settings_for
from tests.fakes.model import ScriptedBackend

TOKEN = "fake-token"


@dataclass
class Running:
    """A connected bot and the fake Discord it talks to."""

    fake: FakeDiscord
    client: DiscordClient
    bot: MemoryBot
    handled: dict[int, asyncio.Event] = field(default_factory=dict)  # by message id; forgetting by -id
    incoming: list[IncomingMessage] = field(default_factory=list)
    edited: list[IncomingMessage] = field(default_factory=list)
    forgotten: list[MessageRef] = field(default_factory=list)
    relearned: dict[int, asyncio.Event] = field(default_factory=dict)

    def watch_handling(self) -> None:
        """Record what reaches the core, and let tests wait until an event is completely handled."""
        original = self.client.on_message
        handle = self.bot.handle

        async def recording_handle(msg: IncomingMessage, reply: ReplyTarget) -> None:
            self.incoming.append(msg)
            await handle(msg, reply)

        self.bot.handle = recording_handle  # type: ignore[method-assign]

        async def on_message(message: discord.Message) -> None:
            try:
                await original(message)
            finally:
                self.handled.setdefault(message.id, asyncio.Event()).set()

        self.client.on_message = on_message  # type: ignore[method-assign]
        forget, relearn = self.bot.forget_message, self.bot.message_edited

        async def recording_forget(ref: MessageRef) -> None:
            self.forgotten.append(ref)
            try:
                await forget(ref)
            finally:
                self.handled.setdefault(-int(ref.message_id), asyncio.Event()).set()

        async def recording_relearn(msg: IncomingMessage, ref: MessageRef) -> None:
            self.edited.append(msg)
            try:
                await relearn(msg, ref)
            finally:
                self.relearned.setdefault(int(msg.message_id), asyncio.Event()).set()

        self.bot.forget_message = recording_forget  # type: ignore[method-assign]
        self.bot.message_edited = recording_relearn  # type: ignore[method-assign]

    async def say(self, payload: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
        """Send a message to the bot and wait until it has been handled (answered or ignored)."""
        done = self.handled.setdefault(int(payload["id"]), asyncio.Event())
        await self.fake.dispatch("MESSAGE_CREATE", payload)
        await asyncio.wait_for(done.wait(), timeout)
        return payload

    async def delete(self, *messages: dict[str, Any], timeout: float = 20.0) -> None:
        """Delete messages as Discord reports it (one event, or one bulk event for several) and wait until the
        bot has forgotten each."""
        done = [self.handled.setdefault(-int(m["id"]), asyncio.Event()) for m in messages]
        where = {"channel_id": messages[0]["channel_id"]}
        if "guild_id" in messages[0]:
            where["guild_id"] = messages[0]["guild_id"]
        if len(messages) == 1:
            await self.fake.dispatch("MESSAGE_DELETE", {"id": messages[0]["id"], **where})
        else:
            await self.fake.dispatch("MESSAGE_DELETE_BULK", {"ids": [m["id"] for m in messages], **where})
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in done)), timeout)

    async def edit(self, message: dict[str, Any], content: str, *, for_bot: bool = True, timeout: float = 20.0,
                   **changes: Any) -> None:
        """Edit a message as Discord reports it (MESSAGE_UPDATE with the whole message) and wait until the bot
        has relearned it (or, no longer `for_bot`, forgotten it)."""
        message.update(content=content, edited_timestamp=_now_iso(), **changes)
        waits = self.relearned if for_bot else self.handled
        done = waits.setdefault(int(message["id"]) * (1 if for_bot else -1), asyncio.Event())
        done.clear()
        await self.fake.dispatch("MESSAGE_UPDATE", message)
        await asyncio.wait_for(done.wait(), timeout)

    def replies(self, channel_id: str) -> list[Recorded]:
        """The messages the bot posted in a channel, as sent (before edits)."""
        return self.fake.sent("POST", rf"^/channels/{channel_id}/messages$")

    async def run_command(self, payload: dict[str, Any], count: int = 2) -> list[Recorded]:
        """Dispatch an interaction and wait for `count` requests made with its token."""
        await self.fake.dispatch("INTERACTION_CREATE", payload)
        token = payload["token"]
        return await self.fake.wait_for(lambda r: token in r.path, count)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


StartBot = Callable[..., Awaitable[Running]]


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    url = await server.start()
    monkeypatch.setattr(discord.http.Route, "BASE", url + "/api/v10")
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(url + "/gateway"))
    yield server
    await server.stop()


def discord_settings(**overrides: Any) -> DiscordSettings:
    return DiscordSettings(**{"token": Secret(TOKEN), **overrides})


@pytest.fixture
async def start_bot(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[StartBot]:
    """Start the bot against the fake: `await start_bot(backend=ScriptedBackend(...), **setting_overrides)`
    (`respond_channels`: DISCORD_RESPOND_CHANNELS).

    Without a backend it gets a default `ScriptedBackend`; `real_model=True` loads the bundled model.
    """
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            backend: Any = None, *, real_model: bool = False, data_dir: Path | None = None,
            respond_channels: frozenset[str] = frozenset(), **overrides: Any
        ) -> Running:
            settings = settings_for(data_dir or tmp_path / "data", **overrides)
            if not real_model:
                backend = backend or ScriptedBackend()
            bot = await stack.enter_async_context(MemoryBot(settings, backend=backend))
            client = DiscordClient(bot, respond_channels=respond_channels,
                                   guild_ready_timeout=0.05)
            task = asyncio.create_task(client.start(TOKEN))
            stack.push_async_callback(_stop, client, task)
            await _until_ready(client, task)
            running = Running(fake, client, bot)
            running.watch_handling()
            return running

        yield start


async def _until_ready(client: DiscordClient, task: asyncio.Task[None]) -> None:
    """Wait for the ready event; if connecting fails first, raise its error instead of timing out."""
    ready = asyncio.create_task(client.wait_until_ready())
    done, _ = await asyncio.wait({ready, task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()
        raise RuntimeError("the client stopped before it was ready")
    if ready not in done:
        ready.cancel()
        raise TimeoutError("the client did not get ready")


async def _stop(client: DiscordClient, task: asyncio.Task[None]) -> None:
    await client.close()
    await asyncio.wait_for(task, 10)
