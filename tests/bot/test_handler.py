"""The reply flow with the real store and a scripted model (exact output; the real model is tested in e2e)."""

import contextlib
import gc
from collections.abc import AsyncIterator, Callable, Iterator

from bot.app import MemoryBot
from bot.errors import REPLY_FAILED
from bot.handler import EMPTY_MESSAGE, PAUSED_NOTICE
from bot.history import Turn
from bot.llm.base import ChatMessage, GenerationParams
from tests.bot.helpers import RecordingReply, message
from tests.fakes.model import ScriptedBackend


async def test_reply_streams_and_writeback_stores_facts_with_source(make_settings):
    backend = ScriptedBackend(reply="Nice to meet you, Dana!", facts=["The user's name is Dana."])
    async with MemoryBot(make_settings(), backend=backend) as bot:
        reply = RecordingReply()
        await bot.handle(message("My name is Dana"), reply)
        assert reply.streamed == ["Nice to meet you, Dana!"]
        assert len(reply.deltas[0]) > 1  # it really streamed
        assert reply.typing_count == 1
        await bot.writeback.drain()
        page = await bot.memories.controls.list(message("x").user)
        assert [r.text for r in page.records] == ["The user's name is Dana."]
        source = page.records[0].source
        assert (source.platform, source.workspace, source.channel, source.message_id) == (
            "console", "local", "terminal", "m1")
        assert source.link == "https://example.test/terminal/m1"
        assert source.time == "2026-11-26T10:00:00+00:00"


async def test_recalled_memories_go_into_the_system_prompt_as_bullets(make_settings):
    backend = ScriptedBackend(reply="ok")
    async with MemoryBot(make_settings(), backend=backend) as bot:
        await bot.memories.controls.remember(message("x"), "The user is vegetarian.")
        await bot.handle(message("What should I cook tonight? Any food ideas?"), RecordingReply())
        system = backend.calls[-1][0].content
        assert "- The user is vegetarian." in system
        assert [r.text for r in await bot.memories.recall.why(message("x").user)] == ["The user is vegetarian."]


async def test_other_users_memories_never_reach_the_prompt(make_settings):
    backend = ScriptedBackend(reply="ok")
    async with MemoryBot(make_settings(), backend=backend) as bot:
        await bot.memories.controls.remember(message("x", user="sam"), "The user is vegetarian.")
        await bot.memories.controls.remember(message("x", platform="discord"), "The user eats fish.")
        await bot.handle(message("What food do I like?"), RecordingReply())
        system = backend.calls[-1][0].content
        assert "vegetarian" not in system and "fish" not in system


async def test_empty_message_gets_an_answer_without_the_model(make_settings):
    backend = ScriptedBackend()
    async with MemoryBot(make_settings(), backend=backend) as bot:
        reply = RecordingReply()
        await bot.handle(message(" \x00 \n "), reply)
        assert reply.sent == [EMPTY_MESSAGE]
        assert backend.calls == []


async def test_long_message_is_cut_with_a_note(make_settings):
    backend = ScriptedBackend(reply="Got it.")
    async with MemoryBot(make_settings(max_input_chars=50), backend=backend) as bot:
        reply = RecordingReply()
        await bot.handle(message("a" * 500), reply)
        assert backend.calls[0][-1].content == "a" * 50
        assert reply.streamed[0].startswith("Got it.")
        assert "first 50 characters" in reply.streamed[0]


async def test_reasoning_blocks_never_reach_the_user(make_settings):
    backend = ScriptedBackend(reply="<think>the user wants a greeting</think>Hello!", chunk=3)
    async with MemoryBot(make_settings(), backend=backend) as bot:
        reply = RecordingReply()
        await bot.handle(message("hi"), reply)
        assert reply.streamed == ["Hello!"]


class FailingBackend(ScriptedBackend):
    def stream(self, messages: list[ChatMessage], params: GenerationParams,
               should_stop: Callable[[], bool]) -> Iterator[str]:
        if params.json_schema is None:
            raise RuntimeError("out of memory")
        yield from super().stream(messages, params, should_stop)


async def test_model_failure_gets_an_apology_and_keeps_the_writeback(make_settings):
    backend = FailingBackend(facts=["The user has a dog."])
    async with MemoryBot(make_settings(), backend=backend) as bot:
        reply = RecordingReply()
        await bot.handle(message("I have a dog"), reply)
        assert reply.sent == [REPLY_FAILED]
        await bot.writeback.drain()
        listed = (await bot.memories.controls.list(message("x").user)).records
        assert [r.text for r in listed] == ["The user has a dog."]


async def test_paused_user_is_told_once_and_nothing_is_learned(make_settings):
    backend = ScriptedBackend(reply="ok", facts=["The user has a dog."])
    async with MemoryBot(make_settings(), backend=backend) as bot:
        user = message("x").user
        await bot.memories.controls.pause(user)
        in_channel, first, second = RecordingReply(), RecordingReply(), RecordingReply()
        await bot.handle(message("I have a dog", direct=False, message_id="c1"), in_channel)
        await bot.handle(message("I have a dog"), first)
        await bot.handle(message("I have a dog"), second)
        assert in_channel.sent == [] and first.sent == [PAUSED_NOTICE] and second.sent == []
        await bot.writeback.drain()
        assert (await bot.memories.controls.list(user)).total == 0
        await bot.memories.controls.resume(user)
        await bot.handle(message("I have a dog"), RecordingReply())
        await bot.writeback.drain()
        assert (await bot.memories.controls.list(user)).total == 1


async def test_rate_limited_user_gets_the_polite_message(make_settings):
    async with MemoryBot(make_settings(rate_limit_messages=1), backend=ScriptedBackend(reply="ok")) as bot:
        first, second = RecordingReply(), RecordingReply()
        await bot.handle(message("one"), first)
        await bot.handle(message("two"), second)
        assert first.streamed == ["ok"]
        assert second.streamed == [] and "wait" in second.sent[0]


async def test_history_of_the_conversation_is_in_the_prompt(make_settings):
    backend = ScriptedBackend(reply=lambda msgs: f"reply to {msgs[-1].content}")
    async with MemoryBot(make_settings(), backend=backend) as bot:
        await bot.writeback.stop()  # the last call is the reply's, not an extraction that ran after it
        await bot.handle(message("first"), RecordingReply())
        await bot.handle(message("second"), RecordingReply())
        contents = [m.content for m in backend.calls[-1]]
        assert contents[1:] == ["first", "reply to first", "second"]


async def test_store_failure_gives_a_reply_without_memories_and_keeps_the_exchange(make_settings):
    from memory.store import StoreError

    backend = ScriptedBackend(reply="Hello!", facts=["The user has a dog."])
    async with MemoryBot(make_settings(), backend=backend) as bot:
        await bot.writeback.stop()

        async def broken_search(*args, **kwargs):
            raise StoreError("qdrant unreachable")

        bot.store.search = broken_search  # the store is down for recall
        reply = RecordingReply()
        await bot.handle(message("I have a dog"), reply)
        assert reply.streamed == ["Hello!"]
        assert await bot.db.pending_count() == 1  # waits for the store to come back


async def test_failed_start_names_the_model_file_and_releases_everything(make_settings, tmp_path):
    import pytest

    from bot.llm.base import ModelError

    settings = make_settings(model=str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelError, match="missing.gguf"):
        async with MemoryBot(settings):
            pass
    async with MemoryBot(settings, backend=ScriptedBackend()) as bot:  # the store's folder lock was released
        assert (await bot.memories.controls.list(message("x").user)).total == 0


async def test_the_profile_is_always_in_the_prompt_and_earlier_words_are_quoted(make_settings):
    backend = ScriptedBackend(reply="ok", facts=[])
    async with MemoryBot(make_settings(memory_top_k=3, rate_limit_messages=0), backend=backend) as bot:
        await bot.memories.controls.remember(message("x", message_id="n"), "My name is Dana")
        for i in range(8):
            await bot.memories.controls.remember(message("x", message_id=f"g{i}"), f"I own garden tool number {i}")
        await bot.handle(message("I fixed the old lawnmower's blade", message_id="m1"), RecordingReply())
        await bot.writeback.drain()
        await bot.handle(message("What did I do to the lawnmower?", message_id="m2"), RecordingReply())
        system = backend.calls[-1][0].content
        assert system.count("garden tool number") <= 2  # three memories at most, the profile apart
        assert "- My name is Dana" in system  # whatever the question
        assert 'Dana said: "I fixed the old lawnmower\'s blade"' in system
        why = await bot.memories.recall.why(message("x").user)
        assert why[0].text == "My name is Dana" and any(r.kind == "message" for r in why)


class BrokenMidReply(RecordingReply):
    """A platform whose call fails after the reply's first piece (its state database away, say)."""

    async def stream(self, deltas: AsyncIterator[str]) -> str:
        async for _ in deltas:
            raise ConnectionError("the platform went away")
        return ""


async def test_a_reply_broken_off_by_the_platform_ends_the_models_turn_and_learning_goes_on(make_settings):
    """The model counts a reply as running until its stream ends, and write-back waits for it: the stream is
    closed when the platform fails, not whenever garbage collection gets to it (it may never, on a quiet bot)."""
    backend = ScriptedBackend(reply="Noted, a dog.", facts=["The user has a dog."], chunk=2)
    async with MemoryBot(make_settings(), backend=backend) as bot:
        gc.disable()
        try:
            with contextlib.suppress(ConnectionError):
                await bot.handle(message("I have a dog"), BrokenMidReply())
            assert bot.model.quiet_for > 0  # no reply is counted as running
            await bot.writeback.drain()
        finally:
            gc.enable()
        listed = (await bot.memories.controls.list(message("x").user)).records
        assert [r.text for r in listed] == ["The user has a dog."]


class PrefixReusingBackend(ScriptedBackend):
    """A scripted model that says it reuses prompt starts, as llama.cpp and OpenVINO do."""

    reuses_prompt_prefix = True


async def test_a_conversations_system_prompt_stays_put_and_new_memories_come_before_the_message(make_settings):
    backend = PrefixReusingBackend(reply="ok", facts=[])
    async with MemoryBot(make_settings(rate_limit_messages=0), backend=backend) as bot:
        await bot.writeback.stop()  # the last call is the reply's
        await bot.memories.controls.remember(message("x", message_id="r1"), "I keep bees on my roof.")
        await bot.handle(message("How are my bees doing in this heat?", message_id="m1"), RecordingReply())
        first = backend.calls[-1]
        await bot.memories.controls.remember(message("x", message_id="r2"), "My bicycle is a red Brompton.")
        await bot.handle(message("Which bicycle do I ride?", message_id="m2"), RecordingReply())
        second = backend.calls[-1]
        assert second[0] == first[0]  # the start the backend processed last time, to the letter
        assert [m.role for m in second] == ["system", "user", "assistant", "system", "user"]
        assert "- My bicycle is a red Brompton." in second[3].content
        assert "Brompton" not in second[0].content
        used = [r.text for r in await bot.memories.recall.why(message("x").user)]
        assert "My bicycle is a red Brompton." in used and "I keep bees on my roof." in used


async def test_each_message_keeps_its_list_so_a_prompt_continues_the_last_one_and_its_reply(make_settings):
    backend = PrefixReusingBackend(reply="ok", facts=[])
    async with MemoryBot(make_settings(rate_limit_messages=0), backend=backend) as bot:
        await bot.writeback.stop()
        user = message("x").user
        await bot.memories.controls.remember(message("x", message_id="r1"), "I keep bees on my roof.")
        await bot.handle(message("How are my bees doing in this heat?", message_id="m1"), RecordingReply())
        prompts = [backend.calls[-1]]
        for i, (fact, question) in enumerate([("My bicycle is a red Brompton.", "Which bicycle do I ride?"),
                                              ("My sister Ana lives in Porto.", "Where does my sister live?")]):
            await bot.memories.controls.remember(message("x", message_id=f"r{i + 2}"), fact)
            await bot.handle(message(question, message_id=f"m{i + 2}"), RecordingReply())
            prompts.append(backend.calls[-1])
        second, third = prompts[1], prompts[2]
        assert third[:len(second)] == second  # the last prompt to the letter, its list included
        assert [m.role for m in third[len(second):]] == ["assistant", "system", "user"]  # reply, list, message
        assert "- My sister Ana lives in Porto." in third[-2].content and "Brompton" not in third[-2].content
        assert {r.text for r in await bot.memories.recall.why(user)} >= {
            "I keep bees on my roof.", "My bicycle is a red Brompton.", "My sister Ana lives in Porto."}


async def test_a_conversation_whose_lists_are_full_takes_a_new_set_of_memories(make_settings):
    backend = PrefixReusingBackend(reply="ok", facts=[])
    budget = backend.count_tokens("- My bicycle is a red Brompton.\n") + 4  # room for about one list
    async with MemoryBot(make_settings(rate_limit_messages=0, memory_token_budget=budget), backend=backend) as bot:
        await bot.writeback.stop()
        await bot.memories.controls.remember(message("x", message_id="r1"), "I keep bees on my roof.")
        await bot.handle(message("How are my bees?", message_id="m1"), RecordingReply())
        await bot.memories.controls.remember(message("x", message_id="r2"), "My bicycle is a red Brompton.")
        await bot.handle(message("Which bicycle do I ride?", message_id="m2"), RecordingReply())
        assert "Brompton" in backend.calls[-1][-2].content and "Brompton" not in backend.calls[-1][0].content
        await bot.memories.controls.remember(message("x", message_id="r3"), "My sister Ana lives in Porto.")
        await bot.handle(message("Where does my sister Ana live?", message_id="m3"), RecordingReply())
        prompt = backend.calls[-1]
        assert "- My sister Ana lives in Porto." in prompt[0].content  # a new set, in the system prompt
        assert [m.role for m in prompt].count("system") == 1  # the turns come without their lists then


async def test_lists_are_only_reused_beside_the_messages_they_came_with(make_settings):
    """The last prompt showed other turns than the history holds now (one deleted since, or two messages answered
    alongside): its lists are not put before other messages; the conversation takes a new set."""
    backend = PrefixReusingBackend(reply="ok", facts=[])
    async with MemoryBot(make_settings(rate_limit_messages=0), backend=backend) as bot:
        await bot.writeback.stop()
        facts = ["I keep bees on my roof.", "My bicycle is a red Brompton.", "My sister Ana lives in Porto."]
        said = [await bot.memories.controls.remember(message("x", message_id=f"r{i}"), fact)
                for i, fact in enumerate(facts)]
        first = message("How are my bees?", message_id="m1")
        bees, bike, ana = (r.id for r in said)
        for i, listed in enumerate([(("m1", ()),), (("m1", ()), ("m2", (bike,))),
                                    (("m1", ()), ("gone", (bike,)), ("m3", (ana,)))]):  # m2 stands where "gone" was
            await bot.memories.history.add(first.conversation_key, Turn(
                first.user.key, f"question {i + 1}", "ok", f"m{i + 1}", (bees,), i, listed))
        await bot.handle(message("And my bees?", message_id="m4"), RecordingReply())
        prompt = backend.calls[-1]
        assert [m.role for m in prompt].count("system") == 1  # no list before another message than its own


async def test_a_memory_forgotten_mid_conversation_leaves_the_prompt(make_settings):
    backend = PrefixReusingBackend(reply="ok", facts=[])
    async with MemoryBot(make_settings(rate_limit_messages=0), backend=backend) as bot:
        await bot.writeback.stop()
        bees = await bot.memories.controls.remember(message("x", message_id="r1"), "I keep bees on my roof.")
        await bot.memories.controls.remember(message("x", message_id="r2"), "My bees make heather honey.")
        await bot.handle(message("Tell me about my bees", message_id="m1"), RecordingReply())
        assert "I keep bees on my roof." in backend.calls[-1][0].content
        assert await bot.memories.forgetting.forget(message("x").user, bees.id)
        await bot.handle(message("And my bees' honey?", message_id="m2"), RecordingReply())
        prompt = "\n".join(m.content for m in backend.calls[-1])
        assert "I keep bees on my roof." not in prompt
        assert "- My bees make heather honey." in backend.calls[-1][0].content  # a new set, recalled afresh


async def test_without_prefix_reuse_every_reply_recalls_into_the_system_prompt(make_settings):
    backend = ScriptedBackend(reply="ok", facts=[])
    async with MemoryBot(make_settings(rate_limit_messages=0), backend=backend) as bot:
        await bot.writeback.stop()
        await bot.handle(message("How are my bees doing?", message_id="m1"), RecordingReply())
        await bot.memories.controls.remember(message("x", message_id="r2"), "My bicycle is a red Brompton.")
        await bot.handle(message("Which bicycle do I ride?", message_id="m2"), RecordingReply())
        assert "- My bicycle is a red Brompton." in backend.calls[-1][0].content
        assert [m.role for m in backend.calls[-1]] == ["system", "user", "assistant", "user"]


async def test_a_long_conversation_keeps_its_prompt_start_and_drops_old_turns_in_halves(make_settings):
    backend = PrefixReusingBackend(reply="ok", facts=[])
    async with MemoryBot(make_settings(rate_limit_messages=0, history_turns=4), backend=backend) as bot:
        await bot.writeback.stop()
        prompts = []
        for i in range(9):
            await bot.handle(message(f"Question number {i}?", message_id=f"m{i}"), RecordingReply())
            prompts.append(backend.calls[-1])
        shown = [sum(m.role == "assistant" for m in p) for p in prompts]
        assert shown == [0, 1, 2, 3, 4, 3, 4, 3, 4]  # at most HISTORY_TURNS; the oldest two leave together
        for before, after in zip(prompts, prompts[1:], strict=False):
            if sum(m.role == "assistant" for m in after) > sum(m.role == "assistant" for m in before):
                assert after[:len(before) - 1] == before[:-1]  # all but the message itself is reused
        assert prompts[-1][-3].content == "Question number 7?"  # the turns shown are the latest ones


async def test_a_conversation_that_began_with_no_memories_gets_them_in_its_system_prompt(make_settings):
    backend = PrefixReusingBackend(reply="ok", facts=[])
    async with MemoryBot(make_settings(rate_limit_messages=0), backend=backend) as bot:
        await bot.writeback.stop()
        await bot.handle(message("Hello there!", message_id="m1"), RecordingReply())
        await bot.memories.controls.remember(message("x", message_id="r1"), "I keep bees on my roof.")
        await bot.handle(message("How are my bees?", message_id="m2"), RecordingReply())
        assert "- I keep bees on my roof." in backend.calls[-1][0].content


async def test_the_conversation_takes_a_new_set_of_memories_when_its_window_moves_on(make_settings):
    backend = PrefixReusingBackend(reply="ok", facts=[])
    async with MemoryBot(make_settings(rate_limit_messages=0, history_turns=2), backend=backend) as bot:
        await bot.writeback.stop()
        await bot.memories.controls.remember(message("x", message_id="r1"), "I keep bees on my roof.")
        await bot.handle(message("How are my bees?", message_id="m1"), RecordingReply())
        await bot.memories.controls.remember(message("x", message_id="r2"), "My bicycle is a red Brompton.")
        for i, expected_in_system in ((2, False), (3, False), (4, True)):  # shown turns 1, 2, then 1: moved on
            await bot.handle(message("Which bicycle do I ride?", message_id=f"m{i}"), RecordingReply())
            assert ("Brompton" in backend.calls[-1][0].content) == expected_in_system
            assert "- My bicycle is a red Brompton." in "\n".join(m.content for m in backend.calls[-1])


class FirstSystemOnlyBackend(PrefixReusingBackend):
    """A model whose chat template, like some, refuses a system message that is not the first."""

    def prompt_tokens(self, messages):
        if any(m.role == "system" for m in messages[1:]):
            raise ValueError("System role only supported at the start")
        return super().prompt_tokens(messages)


async def test_a_template_refusing_a_later_system_message_keeps_the_old_layout(make_settings):
    backend = FirstSystemOnlyBackend(reply="ok", facts=[])
    async with MemoryBot(make_settings(rate_limit_messages=0), backend=backend) as bot:
        await bot.writeback.stop()
        await bot.memories.controls.remember(message("x", message_id="r1"), "I keep bees on my roof.")
        await bot.handle(message("How are my bees?", message_id="m1"), RecordingReply())
        await bot.memories.controls.remember(message("x", message_id="r2"), "My bicycle is a red Brompton.")
        reply = RecordingReply()
        await bot.handle(message("Which bicycle do I ride?", message_id="m2"), reply)
        assert reply.streamed == ["ok"] and "- My bicycle is a red Brompton." in backend.calls[-1][0].content
