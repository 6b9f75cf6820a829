"""The mem0-backed store, for real: the bundled MiniLM embedder with embedded Qdrant in a temp folder, and with
a PostgreSQL + pgvector server on 127.0.0.1."""

import asyncio
import socket
from datetime import UTC, datetime

import pytest

from memory.config import StoreConfig
from memory.recall import RecallQuery
from memory.records import Source
from memory.store import MemoryStore, StoreError


def source(private=False, origin="extracted"):
    return Source(platform="console", workspace="local", channel="terminal", message_id="m1",
                  link=None, time="2026-11-26T10:00:00+00:00", origin=origin, private=private)


@pytest.fixture
async def store(tmp_path, vector_store):
    """The same tests against embedded Qdrant and a real PostgreSQL + pgvector server."""
    config = StoreConfig(directory=tmp_path / "memory")
    if vector_store:
        config = StoreConfig(directory=tmp_path / "memory", provider="pgvector",
                             pgvector_url=vector_store["pgvector_url"])
    async with MemoryStore(config) as s:
        yield s


async def test_add_search_list_with_provenance(store):
    memory_id = await store.add("console:local:dana", "The user is vegetarian.", source())
    found = await store.search("console:local:dana", "what food do I like", 5, include_private=True)
    assert [r.id for r in found] == [memory_id]
    record = found[0]
    assert record.source == source()
    assert record.created_at is not None and record.score is not None
    assert [r.text for r in await store.list("console:local:dana")] == ["The user is vegetarian."]


async def test_users_never_see_each_other(store):
    memory_id = await store.add("console:local:dana", "The user is vegetarian.", source())
    for other in ("console:local:sam", "discord:local:dana", "console:other:dana"):
        assert await store.search(other, "vegetarian", 5, include_private=True) == []
        assert await store.list(other) == []
        assert await store.get(other, memory_id) is None
        assert await store.delete(other, memory_id) is False
    assert await store.get("console:local:dana", memory_id) is not None


async def test_private_facts_only_when_asked(store):
    await store.add("u", "The user has a secret plan.", source(private=True))
    await store.add("u", "The user likes plans.", source())
    shared = await store.search("u", "plan", 5, include_private=False)
    assert [r.text for r in shared] == ["The user likes plans."]
    assert len(await store.search("u", "plan", 5, include_private=True)) == 2


async def test_unknown_and_malformed_ids_are_not_found(store):
    assert await store.get("u", "not-a-uuid") is None
    assert await store.get("u", "00000000-0000-0000-0000-000000000000") is None
    assert await store.delete("u", "nope") is False


async def test_created_at_is_kept_and_list_is_newest_first(store):
    old = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    await store.add("u", "The user went to Paris.", source(), created_at=old)
    await store.add("u", "The user went to Rome.", source())
    listed = await store.list("u")
    assert [r.text for r in listed] == ["The user went to Rome.", "The user went to Paris."]
    assert listed[1].created_at == old


async def test_concurrent_calls_lose_nothing(store):
    await asyncio.gather(*(store.add("u", f"The user owns item number {i}.", source()) for i in range(20)))
    assert len(await store.list("u")) == 20


async def test_delete_all_and_history(store):
    first = await store.add("u", "The user lives in Lisbon.", source())
    await store.update("u", first, text="The user lives in Porto.")
    history = await store.history("u", first)
    assert [h["event"] for h in history] == ["ADD", "UPDATE"]
    await store.add("v", "Someone else.", source())
    assert await store.delete_all("u") == 1
    assert await store.list("u") == []
    assert len(await store.list("v")) == 1


async def test_reopening_the_folder_keeps_memories(tmp_path):
    config = StoreConfig(directory=tmp_path / "memory")
    async with MemoryStore(config) as store:
        await store.add("u", "The user plays chess.", source())
    async with MemoryStore(config) as store:
        assert [r.text for r in await store.list("u")] == ["The user plays chess."]


async def test_fast_recall_agrees_with_mem0_search_and_follows_writes(store):
    ids = [await store.add("u", f"The user {text}.", source()) for text in
           ["likes green tea", "owns a red bicycle", "lives near the sea", "plays the cello", "fears spiders"]]
    await store.add("v", "The user likes green tea too.", source())
    query = "what drinks do I like"
    ours = await store.search("u", query, 5, include_private=True)
    theirs = store._mem0.search(query, top_k=5, filters={"user_id": "u"}, threshold=0.0)["results"]
    assert [r.id for r in ours] == [item["id"] for item in theirs]
    assert [round(r.score, 4) for r in ours] == [round(item["score"], 4) for item in theirs]
    await store.update("u", ids[0], text="The user likes black coffee.")
    await store.delete("u", ids[1])
    found = {r.id: r.text for r in await store.search("u", "coffee bicycle", 5, include_private=True)}
    assert found[ids[0]] == "The user likes black coffee." and ids[1] not in found


async def test_a_fact_is_found_by_the_words_of_its_message(store):
    """The vector of a fact learned from a message is anchored to that message (see MemoryStore._anchor)."""
    message = "We finally adopted a greyhound called Biscuit from the shelter in Leeds!"
    anchored = await store.add("u", "The user adopted a dog.", source(), context=message)
    await store.add("v", "The user adopted a dog.", source())  # the same fact, bare, for another user
    query = "the greyhound from Leeds"
    with_message = (await store.search("u", query, 1, include_private=True))[0]
    bare = (await store.search("v", query, 1, include_private=True))[0]
    assert with_message.id == anchored and with_message.score > bare.score + 0.1
    assert with_message.text == "The user adopted a dog."  # the message itself is not stored
    theirs = store._mem0.search(query, top_k=1, filters={"user_id": "u"}, threshold=0.0)["results"]
    assert round(theirs[0]["score"], 4) == round(with_message.score, 4)  # servers search the same vector

    await store.update("u", anchored, text="The user adopted two dogs.",
                       context="Biscuit got a sister: we adopted a whippet named Crumpet too.")
    found = await store.search("u", "a whippet named Crumpet", 1, include_private=True)
    assert found[0].id == anchored and found[0].score > bare.score


async def test_similarity_compares_facts_not_vectors(store):
    scores = await store.similarity("The user is vegetarian.", ["The user is a vegetarian.", "The user plays golf."])
    assert scores[0] > 0.95 > 0.6 > scores[1]
    assert await store.similarity("anything", []) == []


async def test_forgotten_memories_leave_no_text_behind(store, tmp_path):
    import sqlite3

    kept = await store.add("v", "Someone else likes tea.", source())
    one = await store.add("u", "The user lives in Lisbon.", source())
    await store.update("u", one, text="The user lives in Porto.")
    two = await store.add("u", "The user's doctor is Dr Alves.", source())
    await store.delete("u", two)
    assert await store.delete_all("u") == 1
    history_db = tmp_path / "memory" / "history.sqlite3"
    with sqlite3.connect(history_db) as db:
        texts = " ".join(str(v) for row in db.execute("SELECT old_memory, new_memory FROM history") for v in row)
    assert "Lisbon" not in texts and "Porto" not in texts and "Alves" not in texts
    assert "tea" in texts and [h["event"] for h in await store.history("v", kept)] == ["ADD"]


async def test_a_write_failing_half_way_leaves_recall_consistent(store, monkeypatch):
    await store.add("u", "The user likes tea.", source())
    assert len(await store.search("u", "tea", 5, include_private=True)) == 1  # the user's vectors are cached

    def broken_anchor(*args):
        raise RuntimeError("embedder crashed")

    monkeypatch.setattr(store, "_anchor", broken_anchor)
    with pytest.raises(StoreError):
        await store.add("u", "The user likes green tea.", source(), context="I like green tea")
    found = await store.search("u", "green tea", 5, include_private=True)
    assert sorted(r.text for r in found) == ["The user likes green tea.", "The user likes tea."]


async def test_a_second_process_on_the_embedded_store_gets_a_clear_error(tmp_path):
    config = StoreConfig(directory=tmp_path / "memory")
    async with MemoryStore(config):
        with pytest.raises(StoreError, match="in use by another memorybot process"):
            async with MemoryStore(config):
                pass


async def test_an_unreachable_database_server_fails_at_start(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = StoreConfig(directory=tmp_path / "memory", provider="pgvector", connect_timeout=1.0,
                         pgvector_url=f"postgresql://bob:s3cr3t@127.0.0.1:{port}/mem")
    with pytest.raises(StoreError, match="cannot reach the PostgreSQL server") as raised:
        async with MemoryStore(config):
            pass
    assert "s3cr3t" not in str(raised.value)


def said(day, message_id="m1", private=False):
    return Source(platform="console", workspace="local", channel="terminal", message_id=message_id, link=None,
                  time=datetime(2026, 3, day, 12, tzinfo=UTC).isoformat(), private=private)


async def test_messages_and_facts_share_the_store_but_not_the_list(store):
    fact = await store.add("u", "The user has a cat named Miso.", said(1))
    passage = await store.add("u", "My cat Miso knocked the plant over again", said(1), kind="message", passage=0)
    assert [r.id for r in await store.list("u", kinds=("fact",))] == [fact]
    assert {r.id: r.kind for r in await store.list("u")} == {fact: "fact", passage: "message"}
    assert [r.id for r in await store.search("u", "the plant", 5, include_private=True)] == [fact]
    assert await store.find_passage("u", said(1), 0) == passage
    assert await store.find_passage("u", said(1), 1) is None and await store.find_passage("v", said(1), 0) is None
    elsewhere = Source("console", "local", "other-channel", "m1", None, said(1).time)  # Slack: ids per channel
    assert await store.find_passage("u", elsewhere, 0) is None
    assert await store.delete_all("u") == 2


async def test_recall_finds_by_meaning_words_names_and_time(store):
    ids = {}
    for day, text in [(1, "I repaired the carburettor of my old Vespa"), (2, "We adopted a kitten"),
                      (20, "I went hiking in the hills"), (21, "Dinner with Joaquim was lovely")]:
        ids[text] = await store.add("u", text, said(day, f"m{day}"), kind="message", passage=0)
    await store.add("v", "I repaired a carburettor too", said(1), kind="message", passage=0)

    async def recall(text, window=None, channels=("dense", "keyword", "entity", "time")):
        query = RecallQuery.of(text, window, channels)
        return [r.id for r in await store.recall("u", query, 2, include_private=True, min_score=0.2)]

    assert (await recall("carburettor"))[0] == ids["I repaired the carburettor of my old Vespa"]
    assert (await recall("Joaquim", channels=("keyword",))) == [ids["Dinner with Joaquim was lovely"]]
    late = (datetime(2026, 3, 15, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    assert set(await recall("what did I do", late, ("time",))) == {ids["I went hiking in the hills"],
                                                                  ids["Dinner with Joaquim was lovely"]}
    assert await recall("what did I do", (late[1], late[1]), ("time",)) == []


async def test_recall_keeps_private_superseded_and_other_kinds_out(store):
    secret = await store.add("u", "I am planning a surprise for Ana", said(1, private=True), kind="message")
    old = await store.add("u", "The user lives in Lisbon.", said(1))
    await store.update("u", old, metadata={"superseded_by": "x"})
    query = RecallQuery.of("surprise for Ana in Lisbon")
    shared = await store.recall("u", query, 5, include_private=False)
    assert shared == []
    private = await store.recall("u", query, 5, include_private=True)
    assert [r.id for r in private] == [secret]
    assert await store.recall("u", query, 5, include_private=True, kinds=("fact",)) == []


async def test_profile_lists_current_attribute_facts(store):
    home = await store.add("u", "The user lives in Lisbon.", said(1), attribute="home")
    await store.add("u", "The user likes tea.", said(2))
    name = await store.add("u", "The user's name is Priya.", said(3, private=True), attribute="name")
    assert [r.id for r in await store.profile("u", ("home", "name"), include_private=True)] == [name, home]
    assert [r.attribute for r in await store.profile("u", ("home", "name"), include_private=False)] == ["home"]
    assert await store.profile("v", ("home",), include_private=True) == []


async def test_long_messages_become_passages_the_embedder_reads_whole(store):
    text = " ".join(f"On day {i} I walked the dog to the harbour and back." for i in range(60))
    passages = await store.passages(text)
    assert len(passages) > 2 and " ".join(passages) == text
    assert await store.passages("short one") == ["short one"]
    unsplittable = await store.passages("x" * 5000)  # one unknown token to the tokenizer, however long
    assert "".join(unsplittable) == "x" * 5000 and max(len(p) for p in unsplittable) < 8 * 241


async def test_current_gives_the_ids_still_recallable_in_the_order_asked(store):
    kept = await store.add("u", "The user keeps bees.", source())
    old = await store.add("u", "The user rides a blue bicycle.", source())
    await store.update("u", old, metadata={"superseded_by": "x"})
    private = await store.add("u", "The user takes insulin.", source(private=True))
    gone = await store.add("u", "The user owns a kayak.", source(), expires_on="2020-01-01")
    other = await store.add("someone-else", "The user plays the cello.", source())
    later = await store.add("u", "The user lives in Porto.", source())
    ids = [later, old, private, gone, other, kept]
    assert [r.id for r in await store.current("u", ids, include_private=False)] == [later, kept]
    assert [r.id for r in await store.current("u", ids, include_private=True)] == [later, private, kept]
    assert [r.text for r in await store.current("u", [kept], include_private=False)] == ["The user keeps bees."]
