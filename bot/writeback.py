"""Memory write-back in the background: queued exchanges become stored memories, durably.

The reply path only inserts a row (`submit`); a worker task first keeps the user's message itself (its
passages, episodic memory; `keep_messages`), then extracts facts with the local model when no reply needs it,
stores them with their provenance, and deletes the row. The passages, the extracted facts and how many of each
are stored are kept in the row, so a retry neither extracts again nor stores anything twice. A failing store is
retried with exponential backoff; an answer the model cannot produce validly, or an exchange that failed
MAX_ATTEMPTS times, is set aside (kept, logged). Each worker claims the row it works on for a lease it renews
while it works (`bot/database.py`), so several processes sharing one queue learn each exchange once, and a dead
process's exchange is taken over when its lease runs out. Each memory is stored under the user's lock after checking
that the user has not forgotten everything or paused learning meanwhile. Extraction gives way to replies,
but after MAX_PREEMPTIONS in a row the next one runs to the end, so a busy server still learns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime

from bot.database import BotDatabase, PendingExchange
from bot.exchange import QueuedExchange
from bot.extraction import ExtractionError, FactExtractor
from bot.llm.base import ModelError
from bot.llm.runner import LocalModel, Preempted
from bot.memories import Memories
from bot.message import IncomingMessage
from memory.faults import crash_point
from memory.records import Source
from memory.store import StoreError

_log = logging.getLogger(__name__)

MAX_DEFER_SECONDS = 60.0
MAX_ATTEMPTS = 10  # failures before an exchange is set aside (with backoff capped at 5 min: about half an hour)
MAX_PREEMPTIONS = 3  # replies an extraction gives way to before it runs to the end (or it could starve)
ERROR_PAUSE_SECONDS = 5.0  # how long the worker rests after an error of its own (e.g. the queue database)
RENEWALS_PER_LEASE = 4  # a claim is renewed this often within its lease, so one slow renewal does not lose it
SHARED_POLL_SECONDS = 1.0  # how often an idle worker looks at a shared queue (other processes fill it)


def worker_name() -> str:
    """This worker's name in the queue's claims: host and process, and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def queued_exchange(msg: IncomingMessage, text: str, reply_text: str, context: str | None = None) -> QueuedExchange:
    """What is queued: the user's text, the bot's reply, the bot's message before it (`context`, for "it" and
    "that"), the user's name and the source."""
    source = Source(
        platform=msg.platform,
        workspace=msg.workspace,
        channel=msg.channel_id,
        message_id=msg.message_id,
        link=msg.link,
        time=msg.sent_at.isoformat(),
        origin="extracted",
        private=msg.is_direct,
    )
    return QueuedExchange(text=text, reply=reply_text, context=context, user_name=msg.user_name, source=source)


class WritebackWorker:
    def __init__(
        self,
        db: BotDatabase,
        memories: Memories,
        extractor: FactExtractor,
        model: LocalModel,
        max_backoff: float = 300.0,
        quiet_seconds: float = 0.0,
        keep_messages: bool = True,
        lease_seconds: float = 120.0,
    ) -> None:
        """`quiet_seconds`: see `_wait_for_quiet`. On a queue other processes fill (`db.shared`), an idle worker
        looks again every SHARED_POLL_SECONDS; on its own, it sleeps until `submit` or a retry is due."""
        self._db = db
        self._memories = memories
        self._extractor = extractor
        self._model = model
        self._max_backoff = max_backoff
        self._quiet = quiet_seconds
        self._keep_messages = keep_messages
        self._lease = lease_seconds
        self.name = worker_name()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy = False
        self._gave_way = 0  # extractions stopped for a reply since the last one that ran to the end

    async def submit(self, msg: IncomingMessage, text: str, reply_text: str, context: str | None = None) -> None:
        """Queue an exchange for write-back (a fast, durable insert). `context` is the bot's message the user
        answered, if any: it helps the extractor read "it" and "that", and is never a source of facts."""
        await self._db.enqueue(msg.user.key, queued_exchange(msg, text, reply_text, context))
        crash_point("writeback.queued")
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="memory-writeback")

    async def stop(self) -> None:
        """Stop the worker (what is queued stays queued). The loop also checks `_stopping`: a cancellation that
        lands while psycopg's pool waits for a connection can be swallowed there."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # never stop the bot's shutdown half-way
                _log.exception("write-back worker ended with an error")
            self._task = None
            self._stopping = False

    async def drain(self, timeout: float = 600.0) -> None:
        """Wait until the queue is empty (used by tests and benchmarks)."""
        async with asyncio.timeout(timeout):
            while self._busy or await self._db.pending_count():
                self._wake.set()
                await asyncio.sleep(0.05)

    async def _wait_for_quiet(self) -> None:
        """Wait until no reply has run for `quiet_seconds`, so learning does not compete with a conversation
        that is still going on (a reply would wait for an extraction's prompt processing). Never longer than
        MAX_DEFER_SECONDS in all, so steady traffic cannot starve write-back."""
        deferred = time.monotonic()
        while True:
            await self._model.wait_for_idle()
            remaining = self._quiet - self._model.quiet_for
            if remaining <= 0 or time.monotonic() - deferred > MAX_DEFER_SECONDS:
                return
            await asyncio.sleep(remaining)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._step()
            except Exception:  # the worker must survive anything, its own queue database included
                _log.exception("write-back worker failed; going on in %.0f s", ERROR_PAUSE_SECONDS)
                self._busy = False
                await asyncio.sleep(ERROR_PAUSE_SECONDS)

    async def _step(self) -> None:
        await self._wait_for_quiet()
        exchange, delay = await self._db.claim(self.name, self._lease)
        if exchange is None:
            if self._db.shared:
                delay = SHARED_POLL_SECONDS if delay is None else min(delay, SHARED_POLL_SECONDS)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass
            return
        crash_point("writeback.claimed")
        if exchange.attempts >= MAX_ATTEMPTS:  # its workers died with it (see `BotDatabase.claim`)
            _log.warning("exchange %s set aside: taken over from %d workers that stopped with it", exchange.id,
                         exchange.attempts)
            await self._db.set_aside(exchange, "its workers stopped while learning it")
            return
        self._busy = True
        renewing = asyncio.create_task(self._renew(exchange), name="memory-writeback-lease")
        try:
            await self._process(exchange)
        except Exception as exc:  # anything one exchange does
            _log.exception("write-back of exchange %s failed unexpectedly", exchange.id)
            await self._fail(exchange, f"{type(exc).__name__}: {exc}")
        finally:
            renewing.cancel()
            self._busy = False

    async def _renew(self, exchange: PendingExchange) -> None:
        """Keep the claim on `exchange` while it is worked on (a failed renewal is tried again next time)."""
        while True:
            await asyncio.sleep(self._lease / RENEWALS_PER_LEASE)
            try:
                if not await self._db.renew(exchange, self._lease):
                    return  # gone (done, forgotten) or taken over: storing checks `renew` and stops
            except Exception as exc:  # the queue database is down: the lease may still outlast it
                _log.warning("could not renew the claim on exchange %s: %s", exchange.id, type(exc).__name__)

    async def _extraction_failed(self, exchange: PendingExchange, exc: ExtractionError | ModelError) -> None:
        if isinstance(exc, ExtractionError):  # the model's answer will not get better: keep it for inspection
            # the error quotes the answer, so it goes to the table only, not to the log
            _log.warning("exchange %s set aside: the model gave no valid facts (details in failed_exchanges)",
                         exchange.id)
            await self._db.set_aside(exchange, f"{exc}; model said {exc.raw[:2000]!r}")
        else:
            await self._fail(exchange, f"extraction: {exc}")

    async def _fail(self, exchange: PendingExchange, error: str) -> None:
        """Retry later with backoff, or set the exchange aside once it has failed MAX_ATTEMPTS times."""
        if exchange.attempts + 1 >= MAX_ATTEMPTS:
            _log.warning("exchange %s set aside after %d failed attempts: %s", exchange.id, MAX_ATTEMPTS, error)
            await self._db.set_aside(exchange, error)
            return
        delay = self._backoff(exchange.attempts)
        _log.warning("write-back of exchange %s failed (%s); retrying in %.0f s", exchange.id, error, delay)
        await self._db.retry_later(exchange, delay)

    async def _process(self, exchange: PendingExchange) -> None:
        user_key, record = exchange.user_key, exchange.record
        if await self._db.is_paused(user_key):  # paused after this exchange was queued
            _log.info("exchange %s dropped: learning is paused for that user", exchange.id)
            await self._db.done(exchange)
            return
        source = record.source
        if self._keep_messages and (record := await self._keep_passages(exchange, record)) is None:
            return
        if record.facts is None:
            try:
                facts = await self._extractor.extract(record.text, datetime.fromisoformat(source.time),
                                                      record.user_name, context=record.context,
                                                      preemptible=self._gave_way < MAX_PREEMPTIONS)
            except Preempted:  # the exchange keeps its place in the queue
                self._gave_way += 1
                await self._db.release(exchange)
                return
            except (ExtractionError, ModelError) as exc:
                self._gave_way = 0
                await self._extraction_failed(exchange, exc)
                return
            self._gave_way = 0
            crash_point("writeback.extracted")
            record = replace(record, facts=facts, stored=0)
            await self._db.save_progress(exchange, record)
            crash_point("writeback.facts_saved")

        facts = record.facts or []

        async def learn(index: int) -> None:
            await self._memories.learning.learn(user_key, facts[index], source, context=record.text)
            crash_point("writeback.fact_stored")

        if await self._store_all(exchange, record, facts, record.stored, lambda r, n: replace(r, stored=n),
                                 learn) is None:
            return
        _log.info("exchange %s: stored %d passage(s) and %d fact(s)", exchange.id,
                  len(record.passages or ()), len(facts))
        await self._db.done(exchange)
        crash_point("writeback.done")

    async def _keep_passages(self, exchange: PendingExchange, record: QueuedExchange) -> QueuedExchange | None:
        """Store the passages of the user's message (episodic memory); the record with them counted, or None
        if the exchange ended meanwhile (see `_store_all`)."""
        source = record.source
        # an earlier attempt may have stored one passage more than it recorded (a crash in between)
        resumed = record.passages is not None
        if not resumed:
            record = replace(record, passages=await self._memories.learning.passages(record.text), passages_stored=0)
            await self._db.save_progress(exchange, record)
            crash_point("writeback.passages_split")
        passages, first = record.passages or [], record.passages_stored

        async def keep(index: int) -> None:
            await self._memories.learning.keep_passage(exchange.user_key, passages[index], index, source,
                                              resumed=resumed and index == first)
            crash_point("writeback.passage_stored")

        return await self._store_all(exchange, record, passages, first,
                                     lambda r, n: replace(r, passages_stored=n), keep)

    async def _store_all(self, exchange: PendingExchange, record: QueuedExchange, items: list[str], first: int,
                         counted: Callable[[QueuedExchange, int], QueuedExchange],
                         store: Callable[[int], Awaitable[None]]) -> QueuedExchange | None:
        """Store `items` (the record's passages or facts) from `first`, the first one not yet stored, one at a time
        under the user's lock (`store(index)`), keeping count in the row (`counted(record, how_many)` is the record
        with the count updated). The record as it ends, or None if the exchange ended meanwhile: the user forgot
        everything or paused learning (the row is done), or the store failed (retried later)."""
        for index in range(first, len(items)):
            # The embedder and the model share the CPU cores: storing waits while a reply is generated.
            await self._model.wait_for_idle()
            async with self._memories.locks.hold(user=exchange.user_key):
                if not await self._db.renew(exchange, self._lease) or await self._db.is_paused(exchange.user_key):
                    _log.info("exchange %s dropped: the user forgot everything or paused learning, or another "
                              "worker took it over", exchange.id)
                    await self._db.done(exchange)
                    return None
                try:
                    await store(index)
                except StoreError as exc:
                    await self._fail(exchange, f"memory store: {exc}")
                    return None
                record = counted(record, index + 1)
                await self._db.save_progress(exchange, record)
                crash_point("writeback.counted")
        return record

    def _backoff(self, attempts: int) -> float:
        return min(self._max_backoff, 2.0 ** min(attempts, 20))
