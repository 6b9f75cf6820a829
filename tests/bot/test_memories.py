"""The user-facing memory operations against the real store, embedded Qdrant and pgvector (no model needed)."""

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.app import MemoryBot
from bot.errors import UserError
from bot.message import MessageRef
from bot.settings import SettingsError
from memory.recall import RecallQuery
from memory.records import SUPERSEDED_BY, Source
from tests.bot.helpers import RecordingReply, message
from tests.fakes.model import ScriptedBackend


@pytest.fixture
async def bot(make_settings, vector_store):
    settings = make_settings(rate_limit_messages=0, **vector_store)  # some tests store many facts at once
    async with MemoryBot(settings, backend=ScriptedBackend(reply="ok")) as bot:
        yield bot


async def texts(bot, user="dana"):
    return [r.text for r in (await bot.memories.controls.list(message("x", user=user).user, page_size=100)).records]


async def test_remember_list_search_forget(bot):
    msg = message("x")
    record = await bot.memories.controls.remember(msg, "  I prefer short answers  ")
    assert record.text == "I prefer short answers" and record.source.origin == "explicit"
    assert record.source.link == "https://example.test/terminal/m1"
    found = await bot.memories.controls.search(msg, "answer length")
    assert [r.id for r in found] == [record.id]
    assert await bot.memories.forgetting.forget(msg.user, record.id) is True
    assert await bot.memories.forgetting.forget(msg.user, record.id) is False
    assert await texts(bot) == []


async def test_list_is_paged_newest_first(bot):
    msg = message("x")
    for i in range(12):
        later = replace(message("x", message_id=f"m{i}"), sent_at=msg.sent_at + timedelta(minutes=i))
        await bot.memories.controls.remember(later, f"Fact number {i} about gardening tools {i}")
    first = await bot.memories.controls.list(msg.user, page=1, page_size=5)
    assert (first.total, first.pages) == (12, 3)
    assert first.records[0].text.startswith("Fact number 11")
    last = await bot.memories.controls.list(msg.user, page=3, page_size=5)
    assert len(last.records) == 2
    with pytest.raises(UserError):
        await bot.memories.controls.list(msg.user, page=4, page_size=5)


async def test_bad_input_gets_clear_messages(bot):
    msg = message("x")
    with pytest.raises(UserError, match="what to remember"):
        await bot.memories.controls.remember(msg, "   ")
    with pytest.raises(UserError, match="too long"):
        await bot.memories.controls.remember(msg, "x" * 501)
    with pytest.raises(UserError, match="which memory"):
        await bot.memories.forgetting.forget(msg.user, " ")
    assert await bot.memories.forgetting.forget(msg.user, "no-such-id") is False
    await bot.memories.controls.remember(msg, "I like tea")
    with pytest.raises(UserError, match="already"):
        await bot.memories.controls.remember(msg, "I like tea.")


async def test_someone_elses_id_behaves_as_unknown(bot):
    record = await bot.memories.controls.remember(message("x", user="sam"), "I like tea")
    dana = message("x").user
    assert await bot.memories.forgetting.forget(dana, record.id) is False
    assert await texts(bot, "sam") == ["I like tea"]


async def test_dm_facts_stay_in_dms(bot):
    await bot.memories.controls.remember(message("x", direct=True), "I am planning a surprise party for Ana")
    await bot.memories.controls.remember(message("x", direct=False, channel="general"), "I like party games")
    in_channel = await bot.memories.recall.relevant(message("party plans?", direct=False, channel="general"),
                                           "party plans", 10, 0.0)
    in_dm = await bot.memories.recall.relevant(message("party plans?", direct=True), "party plans", 10, 0.0)
    assert [r.text for r in in_channel] == ["I like party games"]
    assert {r.text for r in in_dm} == {"I like party games", "I am planning a surprise party for Ana"}


async def test_a_move_updates_the_old_fact_and_history_keeps_both(bot):
    msg = message("x")
    old = await bot.memories.controls.remember(msg, "I live in Lisbon")
    await bot.memories.controls.remember(msg, "I have a cat")
    new = await bot.memories.controls.remember(message("x", message_id="m2"), "I moved to Porto")
    assert new.id == old.id and new.source.message_id == "m2"
    assert sorted(await texts(bot)) == ["I have a cat", "I moved to Porto"]
    exported = await bot.memories.controls.export(msg.user)
    item = next(m for m in exported["memories"] if m["id"] == old.id)
    assert [(h["event"], h["new_memory"]) for h in item["history"]] == [
        ("ADD", "I live in Lisbon"), ("UPDATE", "I moved to Porto")]


async def test_changed_preference_and_name_and_plain_additions(bot):
    msg = message("x")
    for fact in ["I eat meat", "My name is Dana", "I have a cat", "I like jazz"]:
        await bot.memories.controls.remember(msg, fact)
    for fact in ["I don't eat meat any more", "My name is Danielle now", "I have a dog", "I like hiking"]:
        await bot.memories.controls.remember(msg, fact)
    assert sorted(await texts(bot)) == sorted([
        "I don't eat meat any more", "My name is Danielle now", "I have a cat", "I like jazz", "I have a dog",
        "I like hiking"])


async def test_superseded_facts_are_not_recalled_but_exported(bot):
    msg = message("x")
    a = await bot.memories.controls.remember(msg, "I live in Lisbon")
    b = await bot.store.add(msg.user.key, "The user lives in Faro.", a.source)  # an older inconsistency
    await bot.memories.controls.remember(msg, "I moved to Porto")
    listed = await texts(bot)
    assert "I moved to Porto" in listed and "The user lives in Faro." not in listed
    exported = await bot.memories.controls.export(msg.user)
    faro = next(m for m in exported["memories"] if m["id"] == b)
    assert faro[SUPERSEDED_BY] == a.id


async def test_export_has_provenance_and_is_json(bot):
    msg = message("x")
    await bot.memories.controls.remember(msg, "I like tea")
    data = json.loads(json.dumps(await bot.memories.controls.export(msg.user)))
    assert data["user"] == {"platform": "console", "workspace": "local", "user_id": "dana"}
    (item,) = data["memories"]
    assert item["source"]["origin"] == "explicit" and item["history"][0]["event"] == "ADD"


async def test_forget_all_clears_memories_queue_and_history(bot):
    msg = message("x")
    await bot.memories.controls.remember(msg, "I like tea")
    await bot.writeback.stop()
    await bot.handle(message("I have a dog"), RecordingReply())
    assert await bot.db.pending_count() == 1
    assert await bot.memories.forgetting.forget_all(msg.user) == 1
    assert await bot.db.pending_count() == 0
    assert await texts(bot) == [] and await bot.memories.history.recent(msg.conversation_key, msg.user.key) == []


async def test_a_deleted_message_is_forgotten_stored_queued_and_in_history(bot):
    dana = message("x")

    async def learn(fact: str, msg) -> None:
        bot.model.backend.facts = [fact]
        await bot.handle(msg, RecordingReply())
        await bot.writeback.drain()

    await learn("The user likes tea", message("I like tea", message_id="m1"))
    await learn("The user has a dog called Rex", message("I have a dog called Rex", message_id="m2"))
    await learn("The user plays chess", message("I play chess", user="eve", channel="elsewhere", message_id="m1"))
    [tea] = [r for r in (await bot.memories.controls.list(dana.user)).records if "tea" in r.text]
    await bot.writeback.stop()
    await bot.handle(message("I live in Porto", message_id="m3"), RecordingReply())
    await bot.memories.recall.note_used(dana.user, [tea])
    assert await bot.db.pending_count() == 1
    # the same message id in another channel is another message (Slack); None matches any channel (Discord).
    # Its fact and the message itself (kept as said) both go.
    assert await bot.memories.forgetting.forget_message(MessageRef("console", "local", "terminal", "m1")) == 2
    assert await texts(bot) == ["The user has a dog called Rex"] and await texts(bot, "eve") == ["The user plays chess"]
    assert await bot.memories.recall.why(dana.user) == []
    assert await bot.store.history(dana.user.key, tea.id) == []
    assert await bot.memories.forgetting.forget_message(MessageRef("console", "local", None, "m3")) == 0
    assert await bot.db.pending_count() == 0
    assert [t.message_id for t in await bot.memories.history.recent(dana.conversation_key, dana.user.key)] == ["m2"]
    assert await bot.memories.forgetting.forget_message(MessageRef("console", "other", None, "m2")) == 0
    assert await texts(bot) == ["The user has a dog called Rex"]


async def test_an_older_bot_database_learns_where_stored_memories_came_from(make_settings, vector_store):
    settings = make_settings(rate_limit_messages=0, **vector_store)
    async with MemoryBot(settings, backend=ScriptedBackend(reply="ok", facts=["The user likes tea"])) as bot:
        await bot.handle(message("I like tea", message_id="m1"), RecordingReply())
        await bot.writeback.drain()
        await bot.writeback.stop()
        await bot.handle(message("I like tea a lot", message_id="m2"), RecordingReply())  # still queued
        await bot.db.sql.execute("DELETE FROM learned_from")  # as a file from before the table was
        await bot.db.sql.set_version(0)
    async with MemoryBot(settings, backend=ScriptedBackend(reply="ok")) as bot:
        assert not bot.db.sources_missing
        # still queued, or learned meanwhile by this bot's worker: either way all of it goes
        await bot.memories.forgetting.forget_message(MessageRef("console", "local", None, "m2"))
        assert await bot.db.pending_count() == 0
        # its fact and the message itself
        assert await bot.memories.forgetting.forget_message(MessageRef("console", "local", None, "m1")) == 2
        assert await texts(bot) == []


async def test_forgetting_one_memory_takes_it_out_of_why(bot):
    msg = message("x")
    tea = await bot.memories.controls.remember(msg, "I like tea")
    await bot.memories.recall.note_used(msg.user, [tea])
    assert await bot.memories.forgetting.forget(msg.user, tea.id)
    assert await bot.memories.recall.why(msg.user) == []


async def test_one_running_bot_per_data_dir(make_settings):
    settings = make_settings()
    async with MemoryBot(settings, backend=ScriptedBackend()):
        with pytest.raises(SettingsError, match="DATA_DIR .* is in use by another running memorybot"):
            async with MemoryBot(settings, backend=ScriptedBackend()):
                pass
    async with MemoryBot(settings, backend=ScriptedBackend()):  # free again once the first has stopped
        pass


async def test_retention_hides_and_purges_expired_memories(make_settings, vector_store):
    from datetime import UTC, datetime

    async with MemoryBot(make_settings(memory_ttl_days=30, **vector_store), backend=ScriptedBackend()) as bot:
        old = replace(message("x", message_id="old"), sent_at=datetime(2020, 1, 1, tzinfo=UTC))
        await bot.memories.controls.remember(old, "I live in Lisbon")
        await bot.memories.controls.remember(message("x"), "I like tea")
        user = message("x").user
        assert [r.text for r in (await bot.memories.controls.list(user)).records] == ["I like tea"]
        recalled = await bot.memories.recall.relevant(message("x"), "Lisbon home", 5, 0.0)
        assert [r.text for r in recalled] == ["I like tea"]
        assert await bot.memories.forgetting.purge_expired() == 1
        assert len((await bot.memories.controls.export(user))["memories"]) == 1


def test_admin_forget_user_command(make_settings, tmp_path, monkeypatch):
    import asyncio

    from adapters.cli import main

    settings = make_settings()

    async def seed():
        async with MemoryBot(settings, backend=ScriptedBackend()) as bot:
            await bot.memories.controls.remember(message("x"), "I like tea")
            await bot.memories.controls.remember(message("x", user="sam"), "I like coffee")

    asyncio.run(seed())
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("EMBEDDER_BACKEND", "sentence_transformers")  # as `settings` (see settings_for)
    assert main(["--env-file", "/dev/null", "admin", "forget-user", "--platform", "console",
                 "--workspace", "local", "--user", "dana"]) == 0

    async def check():
        async with MemoryBot(settings, backend=ScriptedBackend()) as bot:
            return (await texts(bot, "dana"), await texts(bot, "sam"))

    assert asyncio.run(check()) == ([], ["I like coffee"])


def test_admin_forget_user_without_a_workspace_covers_every_one(make_settings, monkeypatch, capsys):
    import asyncio

    from adapters.cli import main

    settings = make_settings()
    spaces = [("discord", "g1"), ("discord", "g2"), ("discord", "dm"), ("slack", "g1")]

    async def seed():
        async with MemoryBot(settings, backend=ScriptedBackend()) as bot:
            for platform, workspace in spaces:
                msg = message("x", platform=platform, workspace=workspace)
                await bot.memories.controls.remember(msg, f"I like tea ({platform} {workspace})")
            sam = message("x", platform="discord", workspace="g1", user="sam")
            await bot.memories.controls.remember(sam, "I like coffee")

    asyncio.run(seed())
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("EMBEDDER_BACKEND", "sentence_transformers")  # as `settings` (see settings_for)
    assert main(["--env-file", "/dev/null", "admin", "forget-user", "--platform", "discord", "--user", "dana"]) == 0
    assert capsys.readouterr().out.count("Deleted 1 memories") == 3

    async def left():
        async with MemoryBot(settings, backend=ScriptedBackend()) as bot:
            return {(p, w): await texts_of(bot, p, w, "dana") for p, w in spaces} | {
                ("sam", "g1"): await texts_of(bot, "discord", "g1", "sam")}

    assert asyncio.run(left()) == {("discord", "g1"): [], ("discord", "g2"): [], ("discord", "dm"): [],
                                   ("slack", "g1"): ["I like tea (slack g1)"], ("sam", "g1"): ["I like coffee"]}


async def texts_of(bot, platform, workspace, user):
    ref = message("x", platform=platform, workspace=workspace, user=user).user
    return [r.text for r in (await bot.memories.controls.list(ref, page_size=100)).records]


async def test_duplicates_are_found_whatever_message_they_came_from(bot):
    user = message("x").user
    source = (await bot.memories.controls.remember(message("x"), "I am vegetarian")).source
    stored = await bot.memories.learning.learn(user.key, "The user is vegetarian.", source,
                                      context="Honestly I have not eaten meat since school, I am vegetarian.")
    again = await bot.memories.learning.learn(user.key, "The user is a vegetarian.", source,
                                     context="Dinner at Marco's was fine, I had the risotto being vegetarian.")
    assert stored is not None and again is None
    assert len(await texts(bot)) == 2  # the explicit "I am vegetarian" and one extracted fact


async def test_a_change_cut_short_by_a_crash_is_finished_when_the_fact_comes_again(bot):
    # A negation replaces the first fact it makes untrue and marks the others superseded; a crash between the
    # two leaves the new text written and the others not marked. The exchange is extracted again on restart:
    # the fact is then a duplicate, and must still mark what it contradicts.
    user = message("x").user
    source = (await bot.memories.controls.remember(message("x"), "I drink coffee")).source
    first = await bot.store.add(user.key, "The user drinks coffee.", source)
    black = await bot.store.add(user.key, "The user drinks black coffee.", source)
    await bot.store.update(user.key, first, text="The user doesn't drink coffee anymore.")  # then the crash
    again = await bot.memories.learning.learn(user.key, "The user doesn't drink coffee anymore.", source)
    assert again is None
    exported = {m["id"]: m for m in (await bot.memories.controls.export(user))["memories"]}
    assert exported[black][SUPERSEDED_BY] == first
    assert "The user drinks black coffee." not in await texts(bot)


def test_the_users_own_name_is_left_out_of_a_query():
    from bot.memories.recall import without_names

    assert without_names("What is Dana's dog called, Dana?", ["Dana"]) == "What is their dog called, they?"
    assert without_names("Danai and Al talk about Also", ["Dana", "Al"]) == "Danai and they talk about Also"
    assert without_names("Is (A.) here?", ["(A.)", " ", "x"]) == "Is (A.) here?"


async def test_the_profile_comes_first_with_one_value_per_attribute(bot):
    msg = message("x")
    for i, fact in enumerate(["I like tea", "My name is Priya", "I play chess", "I live in Lisbon"]):
        await bot.memories.controls.remember(replace(message("x", message_id=f"m{i}"),
                                            sent_at=msg.sent_at + timedelta(minutes=i)), fact)
    assert await texts(bot) == ["My name is Priya", "I live in Lisbon", "I play chess", "I like tea"]
    source = Source("console", "local", "terminal", "m9", None, (msg.sent_at + timedelta(days=1)).isoformat())
    await bot.memories.learning.learn(msg.user.key, "The user lives in a flat by the river in Porto.", source)
    profile = await bot.memories.recall.profile(msg)
    assert [(r.attribute, r.text) for r in profile] == [
        ("name", "My name is Priya"), ("home", "The user lives in a flat by the river in Porto.")]
    assert len(await texts(bot)) == 4


async def test_the_users_words_are_kept_recalled_and_forgotten_like_facts(make_settings, vector_store):
    settings = make_settings(rate_limit_messages=0, **vector_store)
    backend = ScriptedBackend(reply="ok", facts=["The user repaired a Vespa."])
    async with MemoryBot(settings, backend=backend) as bot:
        said = "I finally repaired the carburettor of my old Vespa, it runs again"
        await bot.handle(message(said), RecordingReply())
        await bot.handle(message("I like tea", message_id="m2"), RecordingReply())
        await bot.writeback.drain()
        dana = message("x").user
        assert await texts(bot) == ["The user repaired a Vespa."]  # /memories lists facts only
        found = await bot.memories.recall.relevant(message("carburettor?"), "carburettor", 5, 0.1)
        assert {(r.kind, r.text) for r in found} >= {("message", said), ("fact", "The user repaired a Vespa.")}
        exported = await bot.memories.controls.export(dana)
        assert sorted(m["kind"] for m in exported["memories"]) == ["fact", "message", "message"]
        assert await bot.memories.forgetting.forget_message(MessageRef("console", "local", "terminal", "m1")) == 2
        assert [r.text for r in await bot.store.list(dana.key)] == ["I like tea"]
        assert await bot.memories.forgetting.forget_all(dana) == 1


async def test_keeping_messages_can_be_turned_off(make_settings):
    settings = make_settings(memory_keep_messages=False)
    async with MemoryBot(settings, backend=ScriptedBackend(reply="ok", facts=["The user has a dog."])) as bot:
        await bot.handle(message("I have a dog"), RecordingReply())
        await bot.writeback.drain()
        assert [r.kind for r in await bot.store.list(message("x").user.key)] == ["fact"]


async def test_a_passage_stored_just_before_a_crash_is_not_stored_again(bot):
    dana = message("x").user
    source = Source("console", "local", "terminal", "m1", None, "2026-11-26T10:00:00+00:00")
    await bot.memories.learning.keep_passage(dana.key, "I have a dog", 0, source, resumed=False)
    await bot.memories.learning.keep_passage(dana.key, "I have a dog", 0, source, resumed=True)
    await bot.memories.learning.keep_passage(dana.key, "and a cat", 1, source, resumed=True)
    assert sorted(r.text for r in await bot.store.list(dana.key)) == ["I have a dog", "and a cat"]


async def test_memories_from_before_kinds_and_the_profile_are_upgraded_once(make_settings, vector_store):
    settings = make_settings(rate_limit_messages=0, **vector_store)
    async with MemoryBot(settings, backend=ScriptedBackend(reply="ok")) as bot:
        dana = message("x")
        home = await bot.memories.controls.remember(dana, "I live in Lisbon")
        vectors = bot.store._mem0.vector_store
        old = dict(vectors.get(vector_id=home.id).payload)
        for key in ("kind", "attribute", "source_ts"):  # as stored by the previous version
            old.pop(key, None)
        vectors.update(vector_id=home.id, payload=old)
        await bot.db.upgraded(1)
    async with MemoryBot(settings, backend=ScriptedBackend(reply="ok")) as bot:
        assert bot.db.version == 2
        assert [(r.attribute, r.kind) for r in await bot.memories.recall.profile(dana)] == [("home", "fact")]
        late = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
        query = RecallQuery.of("anything", late, ["time"])
        assert [r.id for r in await bot.store.recall(dana.user.key, query, 5, include_private=True)] == [home.id]


async def test_an_edit_whose_new_text_failed_to_queue_is_handled_again(bot):
    ref = MessageRef("console", "local", "terminal", "m1")
    edited_at = datetime(2026, 11, 26, 10, 5, tzinfo=UTC)
    with pytest.raises(RuntimeError):
        async with bot.memories.forgetting.editing(ref, edited_at) as is_new:
            assert is_new
            raise RuntimeError("the queue failed")
    async with bot.memories.forgetting.editing(ref, edited_at) as is_new:  # the platform's retry of the event
        assert is_new
    async with bot.memories.forgetting.editing(ref, edited_at) as is_new:  # now handled: a repeat is ignored
        assert not is_new


async def test_changes_to_same_id_messages_of_two_channels_stay_apart(bot):
    """Slack's ts are unique per channel only: an edit of the message with the same ts in another channel must
    neither undo a deletion here (a reply still running would be learned, a late edit learned again) nor be
    taken for a late edit of it."""
    edited_at = datetime(2026, 11, 26, 10, 5, tzinfo=UTC)
    here, there = message("I like tea", channel="C1"), message("I like coffee", channel="C2")
    await bot.memories.forgetting.forget_message(here.ref)
    async with bot.memories.forgetting.editing(there.ref, edited_at) as is_new:
        assert is_new
    assert await bot.memories.forgetting.was_changed(here)
    async with bot.memories.forgetting.editing(here.ref, edited_at) as is_new:
        assert not is_new  # deleted: never learned again
    async with bot.memories.forgetting.editing(MessageRef("console", "local", None, "m1"), edited_at) as is_new:
        assert not is_new  # the channel unsaid (Discord): the deletion may be of this one
    assert not await bot.memories.forgetting.was_changed(message("I like milk", channel="C3"))
