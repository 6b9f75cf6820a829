"""Discord's settings: the bot token and the channels where every message is for the bot."""

from __future__ import annotations

from dataclasses import dataclass

from bot.settings import Secret, SettingsError, setting


@dataclass(frozen=True)
class DiscordSettings:
    token: Secret = setting("DISCORD_TOKEN", Secret(""), "Discord bot token (memorybot discord).")
    respond_channels: frozenset[str] = setting(
        "DISCORD_RESPOND_CHANNELS", frozenset(), "Channel ids where the bot answers every message, not only mentions.")

    def validate(self) -> None:
        if not self.token.reveal().strip():
            raise SettingsError("DISCORD_TOKEN is not set: put the bot token from the Discord developer portal "
                                "in the environment or .env")
