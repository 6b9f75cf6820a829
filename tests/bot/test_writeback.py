"""Write-back survives store outages and bad model output, and gives way to replies."""

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.app import MemoryBot
from bot.exchange import QueuedExchange
from bot.message import IncomingMessage, MessageRef
from memory.store import StoreError
from tests.bot.helpers import RecordingReply, message
from tests.fakes.model import ScriptedBackend


class Garbage(ScriptedBackend):
    """A model that never answers with JSON."""

    def stream(self, messages, params, should_stop):
        yield "I cannot do JSON"


async def test_store_outage_is_retried_and_nothing_is_lost(make_settings):
    async with MemoryBot(make_settings(writeback_max_backoff_seconds=0.2),
                         backend=ScriptedBackend(facts=["The user has a dog."])) as bot:
        real_learn = bot.memories.learning.learn
        failures = [2]

        async def flaky_learn(*args, **kwargs):  # the store is down for the first two attempts
            if failures[0]:
                failures[0] -= 1
                raise StoreError("connection refused")
            return await real_learn(*args, **kwargs)

        bot.memories.learning.learn = flaky_learn
        await bot.handle(message("I have a dog"), RecordingReply())
        await bot.writeback.drain(timeout=30)
        assert failures == [0]
        listed = (await bot.memories.controls.list(message("x").user)).records
        assert [r.text for r in listed] == ["The user has a dog."]


async def test_pending_exchanges_survive_a_restart(make_settings):
    settings = make_settings()
    async with MemoryBot(settings, backend=ScriptedBackend(facts=["The user has a dog."])) as bot:
        await bot.writeback.stop()  # as if the process died before the worker got to it
        await bot.handle(message("I have a dog"), RecordingReply())
        assert await bot.db.pending_count() == 1
    async with MemoryBot(settings, backend=ScriptedBackend(facts=["The user has a dog."])) as bot:
        await bot.writeback.drain()
        assert (await bot.memories.controls.list(message("x").user)).total == 1


async def test_invalid_model_output_is_set_aside_not_lost(make_settings):
    async with MemoryBot(make_settings(), backend=Garbage()) as bot:
        await bot.handle(message("I have a dog"), RecordingReply())
        await bot.writeback.drain()
        [(payload, error, *where)] = await bot.db.sql.fetchall(
            "SELECT payload, error, platform, workspace, channel, message_id FROM failed_exchanges")
        assert QueuedExchange.from_json(payload).text == "I have a dog" and error
        assert where == ["console", "local", "terminal", "m1"]  # what a deletion looks set-aside exchanges up by


async def test_duplicate_facts_are_stored_once(make_settings):
    async with MemoryBot(make_settings(), backend=ScriptedBackend(facts=["The user has a dog."])) as bot:
        for i in range(3):
            await bot.handle(message("I have a dog", message_id=f"m{i}"), RecordingReply())
        await bot.writeback.drain()
        assert (await bot.memories.controls.list(message("x").user)).total == 1


async def test_extraction_gives_way_to_a_reply(make_settings):
    backend = ScriptedBackend(reply="ok", facts=["The user has a dog."], chunk=1, delay=0.02)
    async with MemoryBot(make_settings(), backend=backend) as bot:
        await bot.handle(message("I have a dog"), RecordingReply())  # queues an extraction (~0.6 s)
        await asyncio.sleep(0.1)  # the extraction is running now
        reply = RecordingReply()
        await bot.handle(message("quick question", message_id="m2"), reply)
        assert reply.streamed == ["ok"]
        await bot.writeback.drain()
        assert (await bot.memories.controls.list(message("x").user)).total == 1
    kinds = ["extract" if "JSON" in call[0].content else "reply" for call in backend.calls]
    # reply, extraction (stopped for the reply), reply, then both extractions run to the end
    assert kinds == ["reply", "extract", "reply", "extract", "extract"]


async def test_extraction_gives_way_as_soon_as_a_message_is_taken_up(make_settings):
    """Learning stops while a reply is being prepared (its recall needs the cores), before its prompt is ready."""
    backend = ScriptedBackend(reply="ok", facts=["The user has a dog."], chunk=1, delay=0.02)
    async with MemoryBot(make_settings(), backend=backend) as bot:
        await bot.handle(message("I have a dog"), RecordingReply())  # queues an extraction (~0.6 s)
        await asyncio.sleep(0.1)  # the extraction is running now
        async with bot.model.reply_coming():  # a message being recalled for: no prompt has reached the model
            await asyncio.sleep(0.8)  # long enough for the extraction to have ended, had it gone on
            assert bot.model.quiet_for == 0
        await bot.writeback.drain()
        assert (await bot.memories.controls.list(message("x").user)).total == 1
    kinds = ["extract" if "JSON" in call[0].content else "reply" for call in backend.calls]
    assert kinds == ["reply", "extract", "extract"]  # stopped for the coming reply, then run again to the end


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
        await bot.memories.controls.pause(message("x").user)
        bot.writeback.start()
        await bot.writeback.drain()
        assert (await bot.memories.controls.list(message("x").user)).total == 0


@pytest.mark.parametrize("action", ["forgetting.forget_all", "controls.pause"])
async def test_forget_all_or_pause_during_extraction_keeps_nothing(make_settings, action):
    backend = ScriptedBackend(reply="ok", facts=["The user has a dog."], chunk=1, delay=0.02)
    async with MemoryBot(make_settings(), backend=backend) as bot:
        await bot.handle(message("I have a dog"), RecordingReply())
        await asyncio.sleep(0.1)  # the extraction (~0.6 s) is running
        assert bot.writeback._busy
        part, name = action.split(".")
        await getattr(getattr(bot.memories, part), name)(message("x").user)
        await bot.writeback.drain()
        assert (await bot.memories.controls.list(message("x").user)).total == 0


@pytest.mark.parametrize("action", ["forget_all", "delete_message"])
async def test_a_reply_running_during_forget_all_or_its_deletion_is_not_learned(make_settings, action):
    backend = ScriptedBackend(reply="a slow answer", facts=["The user has a dog."], chunk=1, delay=0.05)
    async with MemoryBot(make_settings(), backend=backend) as bot:
        msg = message("I have a dog")
        replying = asyncio.create_task(bot.handle(msg, RecordingReply()))
        await asyncio.sleep(0.2)
        if action == "forget_all":
            await bot.memories.forgetting.forget_all(msg.user)
        else:
            await bot.forget_message(MessageRef(msg.platform, msg.workspace, None, msg.message_id))
        await replying
        await bot.writeback.drain()
        assert await bot.db.pending_count() == 0 and (await bot.memories.controls.list(msg.user)).total == 0
        assert await bot.memories.history.recent(msg.conversation_key, msg.user.key) == []
        await bot.handle(message("I still have a dog", message_id="m2"), RecordingReply())  # others are learned
        await bot.writeback.drain()
        assert (await bot.memories.controls.list(msg.user)).total == 1


async def test_a_message_deleted_during_its_extraction_keeps_nothing(make_settings):
    backend = ScriptedBackend(reply="ok", facts=["The user has a dog."], chunk=1, delay=0.02)
    async with MemoryBot(make_settings(), backend=backend) as bot:
        msg = message("I have a dog")
        await bot.handle(msg, RecordingReply())
        await asyncio.sleep(0.1)  # the extraction (~0.6 s) is running
        assert bot.writeback._busy
        await bot.forget_message(msg.ref)
        await bot.writeback.drain()
        assert (await bot.memories.controls.list(msg.user)).total == 0


async def test_edits_relearn_once_in_order_and_a_delete_waits_for_an_edit(make_settings):
    backend = ScriptedBackend(reply="ok", facts=["The user lives in Lisbon"])
    async with MemoryBot(make_settings(), backend=backend) as bot:
        said = message("I live in Lisbon")
        await bot.handle(said, RecordingReply())
        await bot.writeback.drain()
        await bot.writeback.stop()
        at = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)

        def edit(text: str, minutes: int) -> IncomingMessage:
            return replace(said, text=text, edited_at=at + timedelta(minutes=minutes))

        await bot.message_edited(edit("I live in Porto", 2), said.ref)
        await bot.message_edited(edit("I live in Faro", 1), said.ref)  # delivered late: older than the last
        await bot.message_edited(edit("I live in Porto", 2), said.ref)  # delivered twice
        assert (await bot.memories.controls.list(said.user)).total == 0
        [queued] = [QueuedExchange.from_json(row[0]).text
                    for row in await bot.db.sql.fetchall("SELECT payload FROM pending_exchanges")]
        assert queued == "I live in Porto"
        # an edit and a deletion at once: the deletion waits for the edit, then removes what it queued
        await asyncio.gather(bot.message_edited(edit("I live in Braga", 3), said.ref), bot.forget_message(said.ref))
        await bot.message_edited(edit("I live in Evora", 4), said.ref)  # a deleted message is not relearned
        assert await bot.db.pending_count() == 0


async def test_a_deletion_interrupted_by_the_store_is_finished_later(make_settings):
    async with MemoryBot(make_settings(), backend=ScriptedBackend(facts=["The user has a dog."])) as bot:
        said = message("I have a dog")
        await bot.handle(said, RecordingReply())
        await bot.writeback.drain()
        real_delete = bot.store.delete_from_source

        async def failing(*args, **kwargs):
            raise StoreError("the server is away")

        bot.store.delete_from_source = failing
        with pytest.raises(StoreError):
            await bot.forget_message(said.ref)
        assert (await bot.memories.controls.list(said.user)).total == 1
        bot.store.delete_from_source = real_delete
        assert await bot.memories.forgetting.finish_forgetting() == 2  # the fact and the message itself
        assert (await bot.memories.controls.list(said.user)).total == 0
        assert await bot.memories.forgetting.finish_forgetting() == 0


async def test_a_retry_stores_only_the_facts_not_yet_stored(make_settings):
    facts = ["The user has a dog.", "The user has a cat."]
    backend = ScriptedBackend(facts=facts)
    async with MemoryBot(make_settings(writeback_max_backoff_seconds=0.1), backend=backend) as bot:
        user = message("x").user
        real_learn, calls = bot.memories.learning.learn, []

        async def learn_then_fail_once(user_key, fact, *args, **kwargs):
            calls.append(fact)
            if len(calls) == 2:  # the store fails on the cat; meanwhile the user deletes the dog
                [dog] = (await bot.memories.controls.list(user)).records
                await bot.store.delete(user.key, dog.id)
                raise StoreError("connection reset")
            return await real_learn(user_key, fact, *args, **kwargs)

        bot.memories.learning.learn = learn_then_fail_once
        await bot.handle(message("I have a dog and a cat"), RecordingReply())
        await bot.writeback.drain(timeout=30)
        assert calls == [facts[0], facts[1], facts[1]]  # the dog is not stored again
        assert [r.text for r in (await bot.memories.controls.list(user)).records] == ["The user has a cat."]
    assert sum("JSON" in call[0].content for call in backend.calls) == 1  # extracted once, not per attempt


async def test_an_exchange_failing_again_and_again_is_set_aside(make_settings):
    async with MemoryBot(make_settings(writeback_max_backoff_seconds=0.01),
                         backend=ScriptedBackend(facts=["The user has a dog."])) as bot:
        async def down(*args, **kwargs):
            raise StoreError("connection refused")

        bot.memories.learning.learn = down
        await bot.handle(message("I have a dog"), RecordingReply())
        await bot.writeback.drain(timeout=60)
        [(error,)] = await bot.db.sql.fetchall("SELECT error FROM failed_exchanges")
        assert "connection refused" in error


async def test_the_worker_survives_a_failing_queue_database(make_settings, monkeypatch):
    monkeypatch.setattr("bot.writeback.ERROR_PAUSE_SECONDS", 0.05)
    async with MemoryBot(make_settings(), backend=ScriptedBackend(facts=["The user has a dog."])) as bot:
        real_claim, failures = bot.db.claim, [1]

        async def broken_once(*args):
            if failures[0]:
                failures[0] -= 1
                raise OSError("disk I/O error")
            return await real_claim(*args)

        bot.db.claim = broken_once
        await bot.handle(message("I have a dog"), RecordingReply())
        await bot.writeback.drain()
        assert failures == [0] and (await bot.memories.controls.list(message("x").user)).total == 1


async def test_set_aside_exchanges_are_deleted_after_a_month(make_settings):
    async with MemoryBot(make_settings(), backend=Garbage()) as bot:
        await bot.handle(message("I have a dog"), RecordingReply())
        await bot.writeback.drain()
        await bot.memories.forgetting.purge_expired()
        assert await bot.db.user_keys() == {message("x").user.key}  # a fresh one stays for inspection
        await bot.db.sql.execute("UPDATE failed_exchanges SET failed_at = failed_at - 31 * 86400")
        await bot.memories.forgetting.purge_expired()
        assert await bot.db.user_keys() == set()


async def test_steady_replies_cannot_starve_learning(make_settings):
    backend = ScriptedBackend(reply="ok", facts=["The user has a dog."], chunk=1, delay=0.02)  # extraction ~0.6 s
    async with MemoryBot(make_settings(rate_limit_messages=0), backend=backend) as bot:
        await bot.handle(message("I have a dog"), RecordingReply())
        user, stored = message("x").user, 0
        for i in range(40):  # a new message every ~0.1 s: a reply always arrives before an extraction ends
            await bot.handle(message(f"question {i}", message_id=f"q{i}"), RecordingReply())
            await asyncio.sleep(0.05)
            if stored := (await bot.memories.controls.list(user)).total:
                break
        assert stored == 1  # learned while the conversation went on, after giving way to a few replies
    extractions = sum("JSON" in call[0].content for call in backend.calls)
    assert 2 <= extractions <= 5


async def test_forget_all_waits_for_a_fact_being_stored_then_deletes_it(make_settings):
    async with MemoryBot(make_settings(), backend=ScriptedBackend(facts=["The user has a dog."])) as bot:
        user = message("x").user
        real_add, storing, release = bot.store.add, asyncio.Event(), asyncio.Event()

        async def slow_add(*args, **kwargs):  # the store is slow just as the user forgets everything
            storing.set()
            await release.wait()
            return await real_add(*args, **kwargs)

        bot.store.add = slow_add
        await bot.handle(message("I have a dog"), RecordingReply())
        await asyncio.wait_for(storing.wait(), 30)
        forgetting = asyncio.create_task(bot.memories.forgetting.forget_all(user))
        await asyncio.sleep(0.2)
        assert not forgetting.done()  # it waits for the fact being stored...
        release.set()
        await forgetting
        await bot.writeback.drain()
        assert (await bot.memories.controls.list(user)).total == 0  # ...and then deletes it too


async def test_an_extraction_failing_after_forget_all_is_not_set_aside(make_settings):
    class SlowGarbage(ScriptedBackend):
        def stream(self, messages, params, should_stop):
            if "JSON" in messages[0].content:
                time.sleep(0.5)
                yield "I cannot do JSON"
            else:
                yield "ok"

    async with MemoryBot(make_settings(), backend=SlowGarbage()) as bot:
        await bot.handle(message("I have a dog"), RecordingReply())
        await asyncio.sleep(0.2)  # extracting
        await bot.memories.forgetting.forget_all(message("x").user)
        await bot.writeback.drain()
        assert await bot.db.user_keys() == set()  # nothing of the message is kept, not even set aside


async def test_the_bots_words_are_context_never_facts(make_settings):
    backend = ScriptedBackend(reply="You should avoid peanuts.",
                              facts=["The user should avoid peanuts.", "The user lives in Lisbon."])
    async with MemoryBot(make_settings(), backend=backend) as bot:
        await bot.handle(message("I live in Lisbon, what should I cook?"), RecordingReply())
        await bot.handle(message("ok, sounds good", message_id="m2"), RecordingReply())
        await bot.writeback.drain()
        listed = (await bot.memories.controls.list(message("x").user)).records
        assert [r.text for r in listed] == ["The user lives in Lisbon."]
        extractions = [call for call in backend.calls if "JSON" in call[0].content]
        assert "Assistant:" not in extractions[0][-1].content
        assert extractions[1][-1].content == "Assistant: You should avoid peanuts.\nUser: ok, sounds good"


async def test_questions_and_emoji_never_reach_the_extractor(make_settings):
    backend = ScriptedBackend(reply="ok", facts=["The user lives in Lisbon."])
    async with MemoryBot(make_settings(rate_limit_messages=0), backend=backend) as bot:
        for i, text in enumerate(["What city do I live in, and what should I avoid eating?", "🎉🎉🎉"]):
            await bot.handle(message(text, message_id=f"m{i}"), RecordingReply())
        await bot.writeback.drain()
        assert not [call for call in backend.calls if "JSON" in call[0].content]
        kinds = [r.kind for r in await bot.store.list(message("x").user.key)]
        assert kinds == ["message", "message"]  # kept as said, nothing learned from them


async def test_bad_input_is_kept_whole_and_teaches_nothing_made_up(make_settings):
    backend = ScriptedBackend(reply="ok", facts=["The user lives in Lisbon.", "The user's friend Ana is a nurse."])
    async with MemoryBot(make_settings(rate_limit_messages=0, max_input_chars=60_000), backend=backend) as bot:
        texts = ["x" * 50_000, "🙂" * 300, "```\nrm -rf / # Lisbon\n```", "Ana dice que vive en Lisboa\u200b\u202e",
                 "Ana lives in Lisbon and she is a nurse."]
        for i, text in enumerate(texts):
            await bot.handle(message(text, message_id=f"m{i}"), RecordingReply())
        await bot.writeback.drain(timeout=120)
        stored = await bot.store.list(message("x").user.key)
        assert [r.text for r in stored if r.kind == "fact"] == []  # nothing the user said about themselves
        passages = [r for r in stored if r.kind == "message" and r.source.message_id == "m0"]
        assert len(passages) > 1 and "".join(r.text for r in sorted(passages, key=lambda r: r.id)) .count("x") \
            == 50_000
