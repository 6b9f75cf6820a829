"""The Discord adapter: `memorybot discord` serves `DiscordPlatform`."""

from adapters.discord.service import DiscordPlatform

__all__ = ["DiscordPlatform"]
