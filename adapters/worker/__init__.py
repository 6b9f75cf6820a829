"""`memorybot worker`: a process that serves no platform and only learns, taking exchanges from the write-back
queue that bot processes share in PostgreSQL (DATABASE_URL). Replies (bots with WRITEBACK_WORKER=false) and
extraction can then run on different machines, and more workers learn faster (each claims its own exchanges)."""

from __future__ import annotations

import argparse
import asyncio
import logging

from bot.app import MemoryBot
from bot.settings import SettingsError, load_settings

_log = logging.getLogger(__name__)


class WorkerPlatform:
    name = "worker"
    help = "learn from the shared write-back queue, serving no platform (needs DATABASE_URL)"
    interactive = False

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        pass

    @classmethod
    def from_env(cls, env_file: str | None, args: argparse.Namespace) -> WorkerPlatform:
        """A worker on SQLite state would wait for exchanges no other process can queue: refused."""
        memory = load_settings(env_file).memory
        if not memory.database_url:
            raise SettingsError("memorybot worker needs DATABASE_URL: it learns what bot processes queue there")
        if not memory.writeback_worker:
            raise SettingsError("memorybot worker learns, so WRITEBACK_WORKER must not be false for it")
        return cls()

    async def prepare(self) -> None:
        pass

    async def serve(self, bot: MemoryBot, stop: asyncio.Event) -> None:
        _log.info("worker %s learning from the shared queue", bot.writeback.name)
        await stop.wait()
