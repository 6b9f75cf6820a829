"""`memorybot discord`: the Discord platform (see `adapters/platform.py`): connect, serve until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from typing import Any

import discord

from adapters.discord.client import DiscordClient
from adapters.discord.settings import DiscordSettings
from bot.app import MemoryBot
from bot.settings import SettingsError, load_group

_log = logging.getLogger(__name__)


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
        pass  # Discord checks the token when connecting, which is quick

    async def serve(self, bot: MemoryBot, stop: asyncio.Event) -> None:
        async with DiscordClient(bot, respond_channels=self.settings.respond_channels,
                                 **self._client_options) as client:
            session = asyncio.create_task(_connect(client, self.settings.token.reveal().strip()))
            stopping = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({session, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                if not session.done():
                    await client.close()  # ends the session: `start` returns
                    with contextlib.suppress(asyncio.CancelledError):
                        await session
            session.result()


async def _connect(client: DiscordClient, token: str) -> None:
    try:
        await client.start(token)
    except discord.LoginFailure:
        raise SettingsError("DISCORD_TOKEN was rejected by Discord: check the bot token") from None
    except discord.PrivilegedIntentsRequired:
        raise SettingsError("Discord refused the Message Content intent: enable it for the bot in the "
                            "developer portal (Bot > Privileged Gateway Intents)") from None
