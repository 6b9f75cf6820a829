"""Discord's settings: the bot token, the channels where every message is for the bot, and sharding.

Sharding splits the gateway connection: Discord sends each server's events to shard
`(server id >> 22) % DISCORD_SHARD_COUNT` and direct messages to shard 0. One process may run every shard, or
several processes each run some (`DISCORD_SHARD_IDS`); those then share their state in PostgreSQL (checked in
`adapters/discord/service.py`, where the core's settings are at hand).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.settings import Secret, SettingsError, not_negative, setting


def _shard_ids(value: frozenset[str]) -> str | None:
    return None if all(part.isdigit() for part in value) else "must be shard numbers (0, 1, ...), comma-separated"


@dataclass(frozen=True)
class DiscordSettings:
    token: Secret = setting("DISCORD_TOKEN", Secret(""), "Discord bot token (memorybot discord).")
    respond_channels: frozenset[str] = setting(
        "DISCORD_RESPOND_CHANNELS", frozenset(), "Channel ids where the bot answers every message, not only mentions.")
    shard_count: int = setting(
        "DISCORD_SHARD_COUNT", 0,
        "Shards the bot's gateway connection is split into (Discord requires sharding from 2,500 servers); "
        "0 takes the number Discord recommends, all in this process.",
        not_negative)
    shard_ids: frozenset[str] = setting(
        "DISCORD_SHARD_IDS", frozenset(),
        "Comma-separated shards this process runs (0 to DISCORD_SHARD_COUNT-1), the others running in other "
        "processes, which then share DATABASE_URL; empty runs all of them.", _shard_ids)

    def validate(self) -> None:
        if not self.token.reveal().strip():
            raise SettingsError("DISCORD_TOKEN is not set: put the bot token from the Discord developer portal "
                                "in the environment or .env")
        if self.shard_ids and not self.shard_count:
            raise SettingsError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT: the shards of all processes together")
        if outside := [n for n in self.shards or () if n >= self.shard_count]:
            raise SettingsError(f"DISCORD_SHARD_IDS must be below DISCORD_SHARD_COUNT ({self.shard_count}; shards "
                                f"count from 0), not {', '.join(map(str, outside))}")

    @property
    def shards(self) -> list[int] | None:
        """The shards this process runs, or None for all of them."""
        return sorted(int(part) for part in self.shard_ids) or None

    @property
    def runs_every_shard(self) -> bool:
        """Whether this process alone serves every server (no other process runs a shard of this bot)."""
        return self.shards is None or set(self.shards) == set(range(self.shard_count))
