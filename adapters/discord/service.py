"""Running memorybot on Discord: check the token, start the core, connect, serve until stopped."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import discord

from adapters.discord.client import DiscordClient
from bot.app import MemoryBot
from bot.llm.base import Backend
from bot.settings import Settings, SettingsError

_log = logging.getLogger(__name__)


def require_token(settings: Settings) -> str:
    token = settings.discord_token.reveal().strip()
    if not token:
        raise SettingsError("DISCORD_TOKEN is not set: put the bot token from the Discord developer portal "
                            "in the environment or .env")
    return token


async def serve(settings: Settings, *, backend: Backend | None = None, **client_options: Any) -> None:
    """Serve until the connection ends; `client_options` go to `discord.Client` (tests use them)."""
    token = require_token(settings)
    async with MemoryBot(settings, backend) as bot, DiscordClient(
        bot, respond_channels=settings.discord_respond_channels, **client_options
    ) as client:
        try:
            await client.start(token)
        except discord.LoginFailure:
            raise SettingsError("DISCORD_TOKEN was rejected by Discord: check the bot token") from None
        except discord.PrivilegedIntentsRequired:
            raise SettingsError("Discord refused the Message Content intent: enable it for the bot in the "
                                "developer portal (Bot > Privileged Gateway Intents)") from None


def run(settings: Settings, *, backend: Backend | None = None, **client_options: Any) -> None:
    """`memorybot discord`: blocks until Ctrl-C or SIGTERM (`docker stop`, systemd), then shuts down cleanly."""
    require_token(settings)
    try:
        asyncio.run(_serve_until_stopped(settings, backend, client_options))
    except KeyboardInterrupt:
        pass
    _log.info("stopped")


async def _serve_until_stopped(settings: Settings, backend: Backend | None, client_options: dict[str, Any]) -> None:
    serving = asyncio.create_task(serve(settings, backend=backend, **client_options))
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def shut_down() -> None:  # once: a second Ctrl-C or SIGTERM then stops the process at once
        for sig in signals:
            loop.remove_signal_handler(sig)
        serving.cancel()

    for sig in signals:
        try:
            loop.add_signal_handler(sig, shut_down)
        except NotImplementedError:  # Windows: Ctrl-C still arrives as KeyboardInterrupt
            break
    try:
        await serving
    except asyncio.CancelledError:
        if not serving.cancelled():  # we were cancelled ourselves, not by a signal
            raise
        _log.info("discord: shutting down")
