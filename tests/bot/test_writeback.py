"""Write-back survives store outages and bad model output, and gives way to replies."""

import asyncio

from bot.app import MemoryBot
from memory.store import StoreError
from tests.bot.helpers import RecordingReply, message
from tests.fakes.model import ScriptedBackend


async def test_store_outage_is_retried_and_nothing_is_lost(make_settings):
    async with MemoryBot(make_settings(writeback_max_backoff_seconds=0.2),
                         backend=ScriptedBackend(facts=["The user has a dog."])) as bot:
        real_learn = bot.memories.learn
        failures = [2]

        async def flaky_learn(*args, **kwargs):  # the store is down for the first two attempts
            if failures[0]:
                failures[0] -= 1
                raise StoreError("connection refused")
            return await real_learn(*args, **kwargs)

        bot.memories.learn = flaky_learn
        await bot.handle(message("I have a dog"), RecordingReply())
        await bot.writeback.drain(timeout=30)
        assert failures == [0]
        assert [r.text for r in (await bot.memories.list(message("x").user)).records] == ["The user has a dog."]


async def test_pending_exchanges_survive_a_restart(make_settings):
    settings = make_settings()
    async with MemoryBot(settings, backend=ScriptedBackend(facts=["The user has a dog."])) as bot:
        await bot.writeback.stop()  # as if the process died before the worker got to it
        await bot.handle(message("I have a dog"), RecordingReply())
        assert await bot.db.pending_count() == 1
    async with MemoryBot(settings, backend=ScriptedBackend(facts=["The user has a dog."])) as bot:
        await bot.writeback.drain()
        assert (await bot.memories.list(message("x").user)).total == 1


async def test_invalid_model_output_is_set_aside_not_lost(make_settings):
    class Garbage(ScriptedBackend):
        def stream(self, messages, params, should_stop):
            yield "I cannot do JSON"

    async with MemoryBot(make_settings(), backend=Garbage()) as bot:
        await bot.handle(message("I have a dog"), RecordingReply())
        await bot.writeback.drain()
        async with bot.db.db.execute("SELECT payload, error FROM failed_exchanges") as cursor:
            rows = await cursor.fetchall()
        assert len(rows) == 1 and "I have a dog" in rows[0][0]


async def test_duplicate_facts_are_stored_once(make_settings):
    async with MemoryBot(make_settings(), backend=ScriptedBackend(facts=["The user has a dog."])) as bot:
        for i in range(3):
            await bot.handle(message("I have a dog", message_id=f"m{i}"), RecordingReply())
        await bot.writeback.drain()
        assert (await bot.memories.list(message("x").user)).total == 1


async def test_extraction_gives_way_to_a_reply(make_settings):
    backend = ScriptedBackend(reply="ok", facts=["The user has a dog."], chunk=1, delay=0.02)
    async with MemoryBot(make_settings(), backend=backend) as bot:
        await bot.handle(message("I have a dog"), RecordingReply())  # queues an extraction (~0.6 s)
        await asyncio.sleep(0.1)  # the extraction is running now
        reply = RecordingReply()
        await bot.handle(message("quick question", message_id="m2"), reply)
        assert reply.streamed == ["ok"]
        await bot.writeback.drain()
        assert (await bot.memories.list(message("x").user)).total == 1
    kinds = ["extract" if "JSON" in call[0].content else "reply" for call in backend.calls]
    # reply, extraction (stopped for the reply), reply, then both extractions run to the end
    assert kinds == ["reply", "extract", "reply", "extract", "extract"]


async def test_learning_waits_for_a_quiet_moment(make_settings):
    backend = ScriptedBackend(reply="ok", facts=["The user has a dog."])
    async with MemoryBot(make_settings(writeback_quiet_seconds=0.5), backend=backend) as bot:
        await bot.handle(message("I have a dog"), RecordingReply())
        await asyncio.sleep(0.2)
        await bot.handle(message("and a cat", message_id="m2"), RecordingReply())
        assert ["JSON" in call[0].content for call in backend.calls] == [False, False]  # nothing learned yet
        await bot.writeback.drain()
        assert ["JSON" in call[0].content for call in backend.calls] == [False, False, True, True]


async def test_exchanges_queued_before_a_pause_are_not_learned(make_settings):
    async with MemoryBot(make_settings(), backend=ScriptedBackend(facts=["The user has a dog."])) as bot:
        await bot.writeback.stop()
        await bot.handle(message("I have a dog"), RecordingReply())
        await bot.memories.pause(message("x").user)
        bot.writeback.start()
        await bot.writeback.drain()
        assert (await bot.memories.list(message("x").user)).total == 0
