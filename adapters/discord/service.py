"""`memorybot discord`: the Discord platform (see `adapters/platform.py`): connect, serve until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import discord

from adapters.discord.client import DiscordClient
from adapters.discord.settings import DiscordSettings
from adapters.platform import FINISH_SECONDS
from bot.app import MemoryBot
from bot.settings import SettingsError, load_group

_log = logging.getLogger(__name__)

TOKEN_REJECTED = "DISCORD_TOKEN was rejected by Discord: check the bot token"


class DiscordPlatform:
    name = "discord"
    help = "run the Discord bot"
    interactive = False

    def __init__(self, settings: DiscordSettings, **client_options: Any) -> None:
        self.settings = settings
        self._client_options = client_options  # passed to `discord.Client` (tests use them)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        pass

    @classmethod
    def from_env(cls, env_file: str | None, args: argparse.Namespace) -> DiscordPlatform:
        return cls(load_group(DiscordSettings, env_file))

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
        async with DiscordClient(bot, respond_channels=self.settings.respond_channels,
                                 **self._client_options) as client:
            session = asyncio.create_task(_connect(client, self._token))
            stopping = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({session, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                await _end(client, session)
            if not session.cancelled():
                session.result()

    @property
    def _token(self) -> str:
        return self.settings.token.reveal().strip()


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
