"""`MemoryBot`: the assembled core that adapters talk to.

    async with MemoryBot(settings) as bot:
        await bot.handle(message, reply)     # the reply flow
        await bot.command(name, arg, msg, dialect)  # a user's command (bot/commands)

Entering loads the model and the memory store and starts the write-back worker (unless WRITEBACK_WORKER is off:
then `memorybot worker` processes sharing DATABASE_URL learn); leaving stops them. Pending write-back stays in the
state database (SQLite, or PostgreSQL shared by several processes) and is finished on the next start, or by
another process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import TextIO

from bot import supersede
from bot.access import AccessPolicy
from bot.commands import Dialect, Result, run_command
from bot.database import SCHEMA_VERSION, BotDatabase
from bot.extraction import FactExtractor
from bot.handler import MessageHandler
from bot.llm import load_backend
from bot.llm.base import Backend
from bot.llm.runner import LocalModel
from bot.memories import Memories
from bot.message import IncomingMessage, MessageRef, ReplyTarget
from bot.platform_state import PlatformState
from bot.settings import Settings, SettingsError
from bot.writeback import WritebackWorker
from memory.config import StoreConfig
from memory.store import MemoryStore, StoreError

_log = logging.getLogger(__name__)

RETENTION_INTERVAL_SECONDS = 24 * 3600
MAINTENANCE_INTERVAL_SECONDS = 600


def store_config(settings: Settings) -> StoreConfig:
    return StoreConfig(
        directory=settings.memory_dir,
        provider=settings.memory.vector_store,
        embedder=settings.embedder,
        embedder_model=settings.memory.embedder_model,
        embedder_threads=settings.model.threads,
        embedder_cache=settings.model_dir,
        qdrant_url=settings.memory.qdrant_url,
        qdrant_api_key=settings.memory.qdrant_api_key.reveal(),
        pgvector_url=settings.memory.pgvector_url.reveal(),
        keep_history=not settings.memory.database_url,  # see memory/config.py
    )


def lock_data_dir(data_dir: Path) -> TextIO | None:
    """One running bot per DATA_DIR when its state is in SQLite there: two workers on one SQLite queue would
    learn every exchange twice (PostgreSQL state is claimed row by row instead; see bot/database.py). The lock
    file stays open (and locked) while the bot runs; the system releases it when the process ends, however it
    ends."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock; one bot per DATA_DIR is up to the operator
        return None
    handle = open(data_dir / "bot.lock", "w")  # noqa: SIM115 - held open for the bot's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise SettingsError(f"DATA_DIR {data_dir} is in use by another running memorybot: give each bot (Discord, "
                            "Slack) its own DATA_DIR") from None
    return handle


async def _refuse_state_left_behind(path: Path) -> None:
    """A bot moved to DATABASE_URL must not leave its SQLite state behind unread: its paused users would be
    learned from again and its queued exchanges (what users said) would stay where no forgetting reaches."""
    if not path.exists():
        return
    old = BotDatabase(path)
    await old.open()
    try:
        left = await old.has_state()
    finally:
        await old.close()
    if left:
        raise SettingsError(f"{path} holds this bot's state from before DATABASE_URL (queued exchanges, paused users, "
                            "learned message ids, threads it posted in): move it with `memorybot admin export` under "
                            "the old settings and `memorybot admin import` under the new ones, or delete the file if "
                            "none of it is needed")


class MemoryBot:
    def __init__(self, settings: Settings, backend: Backend | None = None) -> None:
        self.settings = settings
        self._backend = backend
        self.access: AccessPolicy
        self.db = BotDatabase(settings.database_path, settings.memory.database_url.reveal())
        self.store = MemoryStore(store_config(settings))
        self.memories: Memories
        self.model: LocalModel | None = None
        self.writeback: WritebackWorker
        self._handler: MessageHandler
        self._retention: asyncio.Task[None] | None = None
        self._lock: TextIO | None = None

    async def __aenter__(self) -> MemoryBot:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def _start(self) -> None:
        self.settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # what users said lives here
        if not self.settings.memory.database_url:
            self._lock = lock_data_dir(self.settings.data_dir)
        else:
            await _refuse_state_left_behind(self.settings.database_path)
        await self.db.open()
        await PlatformState(self.db.sql).move_in(self.settings.data_dir)
        if not self.db.shared:  # this process owns the SQLite queue: claims in it are a killed run's
            await self.db.release_all()
        # a wall clock only where processes share the rate limit (a monotonic one is not comparable across them)
        self.access = AccessPolicy(self.settings.access, self.db.recent,
                                   time.time if self.db.shared else time.monotonic)
        # One after the other, never side by side: transformers sets torch's default dtype for the whole
        # process while it loads, which would corrupt the embedder (or the model) loading at the same time.
        # The model first: compiling it takes the most memory, and less is held before it than after.
        backend = self._backend or await asyncio.to_thread(load_backend, self.settings)
        self.model = LocalModel(backend, self.settings.model.generation_queue_size)
        # processes starting together on a new database would each create mem0's extension and tables, and
        # collide there (a unique violation): one at a time
        async with self.db.sql.lock("memorybot store setup"):
            await self.store.open()
        if self.db.version < SCHEMA_VERSION:
            # once, by one process of those sharing the state: the others wait, then find it done
            async with self.db.sql.lock("memorybot upgrade"):
                await self.db.reload_version()
                await self._upgrade()
        memory = self.settings.memory
        self.memories = Memories(self.store, self.db, ttl_days=memory.ttl_days,
                                 history_turns=self.settings.model.history_turns,
                                 channels=tuple(sorted(memory.recall_channels)))
        extractor = FactExtractor(self.model)
        self.writeback = WritebackWorker(
            self.db, self.memories, extractor, self.model,
            max_backoff=memory.writeback_max_backoff_seconds,
            quiet_seconds=memory.writeback_quiet_seconds,
            keep_messages=memory.keep_messages,
            lease_seconds=memory.writeback_lease_seconds,
        )
        self._handler = MessageHandler(
            self.settings, self.model, self.memories, self.writeback, self.db, self.access
        )
        if memory.writeback_worker:
            self.writeback.start()
        self._retention = asyncio.create_task(self._apply_retention(), name="memory-retention")
        pending = await self.db.pending_count()
        if pending:
            _log.info("resuming write-back of %d pending exchange(s)", pending)

    async def _upgrade(self) -> None:
        """The one-time upgrades of a store from before them (see `BotDatabase.open`)."""
        if self.db.sources_missing:  # a new bot database, or one from before deleted messages were forgotten
            stored = await self.store.sources()
            await self.db.fill_sources([(user_key, MessageRef(s.platform, s.workspace, s.channel, s.message_id))
                                        for user_key, s in stored])
            _log.info("recorded the source messages of %d stored memories", len(stored))
        if self.db.version < SCHEMA_VERSION:  # memories stored before kinds, the profile and the time channel
            upgraded = await self.store.upgrade(supersede.profile_attribute)
            await self.db.upgraded(SCHEMA_VERSION)
            _log.info("gave %d stored memories their kind, profile attribute and time", upgraded)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        """Stop whatever has started (also after a failed start)."""
        if hasattr(self, "writeback"):
            await self.writeback.stop()
        if self._retention is not None:
            self._retention.cancel()
        if self.model is not None:
            await self.model.close()
        await self.store.close()
        await self.db.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def handle(self, msg: IncomingMessage, reply: ReplyTarget) -> None:
        await self._handler.handle(msg, reply)

    async def command(self, name: str, arg: str, msg: IncomingMessage, dialect: Dialect, *,
                      confirmed: bool = False) -> Result:
        """Run a user's command (`msg` is the command as a message; see `bot/commands`)."""
        return await run_command(self.memories, self.access, name, arg, msg, dialect, confirmed=confirmed)

    async def forget_message(self, ref: MessageRef) -> None:
        """A message was deleted on its platform (or edited so that it is no longer for the bot): forget what
        the bot learned from it (see `Forgetting.forget_message`)."""
        forgotten = await self.memories.forgetting.forget_message(ref)
        if forgotten:
            _log.info("%s message %s: forgot %d memories learned from it", ref.platform, ref.message_id,
                      forgotten)

    async def message_edited(self, msg: IncomingMessage, ref: MessageRef) -> None:
        """A message for the bot was edited (`ref` names it as the platform's deletions do): what its old text
        taught is forgotten and its new text is learned, without a new reply."""
        async with self.memories.forgetting.editing(ref, msg.edited_at) as is_new:
            if is_new:
                await self._handler.learn_edit(msg)
                return
        _log.info("%s message %s: edit ignored (deleted, or not newer than one handled)", ref.platform,
                      ref.message_id)

    async def _apply_retention(self) -> None:
        """At start and then every few minutes: finish deleting what deleted or edited messages taught where a
        store failure interrupted it. At start and then daily: purge expired memories and old set-aside
        exchanges (expired memories are never recalled meanwhile). Of the processes sharing the state, one at a
        time does it; each still purges once a day (a purge just after another's finds little to delete)."""
        last_purge = float("-inf")
        while True:
            try:
                due = time.monotonic() - last_purge >= RETENTION_INTERVAL_SECONDS
                if await self.maintain(purge=due) and due:
                    last_purge = time.monotonic()
            except StoreError as exc:
                _log.warning("memory maintenance failed, will try again: %s", exc)
            except Exception:  # whatever it was, maintenance must run again
                _log.exception("memory maintenance failed unexpectedly, will try again")
            await asyncio.sleep(MAINTENANCE_INTERVAL_SECONDS)

    async def maintain(self, *, purge: bool) -> bool:
        """One round of `_apply_retention` (with the retention purge if `purge`); False if another process sharing
        the state was doing it."""
        async with self.db.sql.try_lock("memorybot maintenance") as ours:
            if not ours:
                return False
            if forgotten := await self.memories.forgetting.finish_forgetting():
                _log.info("forgot %d memories of deleted or edited messages after a store failure", forgotten)
            if purge and (purged := await self.memories.forgetting.purge_expired()):
                _log.info("retention: purged %d expired memories", purged)
        return True


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[tuple[MemoryStore, BotDatabase]]:
    """The memory store and the bot's state of `settings`, without the model (command-line and admin tasks)."""
    db = BotDatabase(settings.database_path, settings.memory.database_url.reveal())
    await db.open()
    try:
        async with MemoryStore(store_config(settings)) as store:
            yield store, db
    finally:
        await db.close()


@asynccontextmanager
async def open_memories(settings: Settings) -> AsyncIterator[Memories]:
    """The memory operations without the model (for command-line listing and admin tasks)."""
    async with open_store(settings) as (store, db):
        yield Memories(store, db, ttl_days=settings.memory.ttl_days,
                       channels=tuple(sorted(settings.memory.recall_channels)))
