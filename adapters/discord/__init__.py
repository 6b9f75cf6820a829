"""The Discord adapter: `memorybot discord` calls `run(settings)`."""

from adapters.discord.service import run, serve

__all__ = ["run", "serve"]
