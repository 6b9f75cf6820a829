"""`memorybot discord`: the Discord platform (see `adapters/platform.py`): connect, serve until stopped.

A process running only some of the shards (DISCORD_SHARD_IDS) is refused unless the bot's state and memories are
shared (DATABASE_URL, which needs a shared store): every shard's process then queues, pauses, locks and learns in
one place, each exchange learned once by whichever worker claims it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import discord

from adapters.discord.client import DiscordClient
from adapters.discord.settings import DiscordSettings
from adapters.platform import FINISH_SECONDS
from bot.app import MemoryBot
from bot.settings import MemorySettings, SettingsError, load_group, load_settings
from bot.sql import LockLost, Sql

_log = logging.getLogger(__name__)

TOKEN_REJECTED = "DISCORD_TOKEN was rejected by Discord: check the bot token"


class DiscordPlatform:
    name = "discord"
    help = "run the Discord bot"
    interactive = False

    def __init__(self, settings: DiscordSettings, **client_options: Any) -> None:
        self.settings = settings
        self._client_options = client_options  # discord.py client options (tests use them)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        pass

    @classmethod
    def from_env(cls, env_file: str | None, args: argparse.Namespace) -> DiscordPlatform:
        settings = load_group(DiscordSettings, env_file)
        check_shared_state(settings, load_settings(env_file).memory)  # before the model loads
        return cls(settings)

    async def prepare(self) -> None:
        """Check the token with Discord before the model loads, so a wrong one fails at once."""
        http = discord.http.HTTPClient(asyncio.get_running_loop())
        try:
            await http.static_login(self._token)
        except discord.LoginFailure:
            raise SettingsError(TOKEN_REJECTED) from None
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            raise SettingsError(f"could not reach Discord to check DISCORD_TOKEN: {exc}") from None
        finally:
            await http.close()

    async def serve(self, bot: MemoryBot, stop: asyncio.Event) -> None:
        check_shared_state(self.settings, bot.settings.memory)
        shards = {"shard_count": self.settings.shard_count or None, "shard_ids": self.settings.shards}
        async with AsyncExitStack() as claims:
            await claim_shards(claims, bot.db.sql, self.settings)
            await self._serve(bot, stop, shards)

    async def _serve(self, bot: MemoryBot, stop: asyncio.Event, shards: dict[str, Any]) -> None:
        async with DiscordClient(bot, respond_channels=self.settings.respond_channels,
                                 **shards, **self._client_options) as client:
            session = asyncio.create_task(_connect(client, self._token))
            stopping = asyncio.create_task(stop.wait())
            claimed = asyncio.create_task(bot.db.sql.keep_locks())  # raises if another process took a shard
            try:
                await asyncio.wait({session, stopping, claimed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                claimed.cancel()
                await _end(client, session)
            if claimed.done() and not claimed.cancelled():
                try:
                    claimed.result()
                except LockLost as exc:
                    raise SettingsError("another memorybot discord process took over a shard of this one while its "
                                        "database connection was away; stopped (each shard runs in one process)"
                                        ) from exc
            if not session.cancelled():
                session.result()

    @property
    def _token(self) -> str:
        return self.settings.token.reveal().strip()


def check_shared_state(discord_settings: DiscordSettings, memory: MemorySettings) -> None:
    """Refuse to run some of the shards on state of this process's own: each process would keep its own memories,
    pauses and queue, so a server that moves to another shard (another count, shards moved between processes)
    would lose what the bot knows of its users, and an admin's deletion would reach one process's share only."""
    if not discord_settings.runs_every_shard and not memory.database_url:
        raise SettingsError("DISCORD_SHARD_IDS leaves the other shards to other processes, which must share the "
                            "bot's state: set DATABASE_URL (and VECTOR_STORE=pgvector or QDRANT_URL), the same "
                            "for every shard's process")


async def claim_shards(claims: AsyncExitStack, sql: Sql, settings: DiscordSettings) -> None:
    """Refuse to run a shard another process sharing the state runs already: both would answer each of its
    messages. Held in `claims` while serving; the database lets go of a process that dies. A process running every
    shard holds them all alone; one running some holds each of its own, beside the others."""
    some = not settings.runs_every_shard
    wanted = [("discord shards", some, "every shard" if some else "shards of this bot")]  # (key, shared, held by it)
    wanted += [(f"discord shard {n}", False, f"shard {n}") for n in settings.shards or ()]
    for key, shared, held in wanted:
        if not await claims.enter_async_context(sql.try_lock(key, shared=shared, keep=True)):
            raise SettingsError(f"another memorybot discord process on this DATABASE_URL already runs {held}: "
                                "give each process its own DISCORD_SHARD_IDS (each shard runs in one process)")


async def _end(client: DiscordClient, session: asyncio.Task[None]) -> None:
    """Stop a session still running: connected, let the events being handled finish, then close; still
    connecting, cancel it (closing would pull the HTTP session from under its requests)."""
    if session.done():
        return
    if client.is_ready():
        await client.finish_work(FINISH_SECONDS)
        await client.close()  # ends the session: `start` returns
    else:
        session.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await session


async def _connect(client: DiscordClient, token: str) -> None:
    try:
        await client.start(token)
    except discord.LoginFailure:
        raise SettingsError(TOKEN_REJECTED) from None
    except discord.PrivilegedIntentsRequired:
        raise SettingsError("Discord refused the Message Content intent: enable it for the bot in the "
                            "developer portal (Bot > Privileged Gateway Intents)") from None
