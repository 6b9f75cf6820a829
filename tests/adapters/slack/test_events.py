"""Events over real HTTP: mentions, DMs, threads, escaping, streaming, splitting, 401s, retries, errors."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from adapters.slack.reply import LIMIT
from bot.message import UserRef
from tests.adapters.slack.conftest import StartApp, mention, message, next_ts
from tests.adapters.slack.fake_slack import TEAM_ID, FakeSlack
from tests.fakes.model import ScriptedBackend


async def test_mention_is_answered_in_its_thread_escaped(start_app: StartApp, fake: FakeSlack) -> None:
    backend = ScriptedBackend(reply="Hi <!channel> & <!here> <@U999> <https://evil|click>", chunk=200)
    async with start_app(backend) as h:
        event = mention("hello there", channel="C7")
        assert await h.event(event) == 200
        await h.settle()

    posts = fake.posts()
    assert len(posts) == 1
    assert posts[0]["channel"] == "C7"
    assert posts[0]["thread_ts"] == event["ts"]
    assert posts[0]["text"] == "Hi &lt;!channel&gt; &amp; &lt;!here&gt; &lt;@U999&gt; &lt;https://evil|click&gt;"
    assert "<!" not in fake.all_text() and "<@" not in fake.all_text()
    prompt = backend.calls[0][-1].content
    assert "hello there" in prompt and "<@U0BOT>" not in prompt
    assert fake.calls_to("chat.getPermalink")[0].args["message_ts"] == event["ts"]


async def test_direct_message_is_answered_in_the_dm(start_app: StartApp, fake: FakeSlack) -> None:
    async with start_app(ScriptedBackend(reply="Hello!")) as h:
        await h.event(message("hi", channel="D42"))
        await h.settle()
    [post] = fake.posts()
    assert post["channel"] == "D42" and post.get("thread_ts") is None and post["text"] == "Hello!"


async def test_streaming_posts_then_updates_the_same_message(start_app: StartApp, fake: FakeSlack) -> None:
    text = " ".join(f"word{i}" for i in range(40))
    async with start_app(ScriptedBackend(reply=text, chunk=10, delay=0.08)) as h:
        started = time.monotonic()
        await h.event(mention("tell me something"))
        await h.settle()
        elapsed = time.monotonic() - started
    [post] = fake.calls_to("chat.postMessage")
    updates = fake.calls_to("chat.update")
    assert len(updates) >= 2  # at least one throttled edit while streaming, and the final one
    assert len(post.args["text"]) < len(text)
    assert all(u.args["channel"] == "C1" for u in updates)
    assert updates[-1].args["text"] == text
    # edits are throttled to one per second; the final one may follow at once
    assert len(updates) <= elapsed + 2


async def test_long_reply_is_split_under_the_limit(start_app: StartApp, fake: FakeSlack) -> None:
    text = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum " * 30 for i in range(25))  # ~9,500 chars
    async with start_app(ScriptedBackend(reply=text, chunk=len(text))) as h:
        event = mention("write a lot")
        await h.event(event)
        await h.settle()
    posts = fake.posts()
    assert len(posts) >= 3
    assert all(len(p["text"]) <= LIMIT for p in posts)
    assert all(p["thread_ts"] == event["ts"] for p in posts)
    assert " ".join(p["text"] for p in posts).split() == text.split()


async def test_bad_signature_and_old_timestamp_get_401(start_app: StartApp, fake: FakeSlack) -> None:
    async with start_app() as h:
        body = json.dumps({"type": "event_callback", "event": mention("hi"), "event_id": "EvBad"})
        assert await h.post(body, "application/json", secret="wrong-secret") == 401
        assert await h.post(body, "application/json", timestamp=int(time.time()) - 301) == 401
        await h.settle()
    assert fake.posts() == []


async def test_retry_of_a_handled_event_gets_no_second_reply(start_app: StartApp, fake: FakeSlack) -> None:
    async with start_app() as h:
        event = mention("hi")
        assert await h.event(event, event_id="EvSame") == 200
        await h.settle()
        assert await h.event(event, event_id="EvSame", retry=1) == 200
        await h.settle()
    assert len(fake.posts()) == 1


async def test_handled_event_ids_survive_a_restart(start_app: StartApp, fake: FakeSlack) -> None:
    event = mention("hi")
    async with start_app() as h:
        await h.event(event, event_id="EvDurable")
        await h.settle()
    async with start_app() as h:
        await h.event(event, event_id="EvDurable", retry=2)
        await h.settle()
    assert len(fake.posts()) == 1


async def test_state_an_older_version_kept_in_its_own_file_is_moved_in(start_app: StartApp, fake: FakeSlack,
                                                                       tmp_path: Path) -> None:
    """The adapter used to keep DATA_DIR/slack.sqlite3: after an update the bot still follows its threads and
    ignores retries of events it answered, from its own database, and the old file goes."""
    thread = next_ts()
    old = sqlite3.connect(tmp_path / "slack.sqlite3")
    old.executescript("CREATE TABLE seen_events (event_id TEXT PRIMARY KEY, seen_at DOUBLE PRECISION NOT NULL);"
                      "CREATE TABLE bot_threads (channel TEXT NOT NULL, thread_ts TEXT NOT NULL, "
                      "PRIMARY KEY (channel, thread_ts));")
    old.execute("INSERT INTO seen_events VALUES ('EvOld', ?)", (time.time(),))
    old.execute("INSERT INTO bot_threads VALUES ('C2', ?)", (thread,))
    old.commit()
    old.close()
    async with start_app() as h:
        assert not (tmp_path / "slack.sqlite3").exists()
        await h.event(message("back in the thread", channel="C2", channel_type="channel", thread_ts=thread))
        await h.event(message("answered before the update", channel="D5"), event_id="EvOld", retry=1)
        await h.settle()
    assert [(p["channel"], p.get("thread_ts")) for p in fake.posts()] == [("C2", thread)]


async def test_bot_messages_and_subtypes_are_ignored(start_app: StartApp, fake: FakeSlack) -> None:
    async with start_app() as h:
        await h.event(message("from a bot", bot_id="B999"))
        await h.event(message("edited", subtype="message_changed"))
        await h.event(message("joined", channel="C1", channel_type="channel", subtype="channel_join"))
        await h.event(message("gone", subtype="message_deleted"))
        await h.event(mention("bot mention", bot_id="B999"))
        await h.event(message("a person", channel="D5"))
        await h.settle()
    assert [p["channel"] for p in fake.posts()] == ["D5"]


async def test_follow_ups_in_the_bots_thread_are_answered(start_app: StartApp, fake: FakeSlack) -> None:
    async with start_app() as h:
        start = mention("start a thread", channel="C2")
        await h.event(start)
        await h.settle()
        in_thread = message("and another thing", channel="C2", channel_type="channel", thread_ts=start["ts"])
        await h.event(in_thread)
        await h.event(message("other thread", channel="C2", channel_type="channel", thread_ts=next_ts()))
        await h.event(message("top level chatter", channel="C2", channel_type="channel"))
        # a mention inside the thread arrives twice (app_mention + message): answered once
        both = mention("again", channel="C2", thread_ts=start["ts"])
        await h.event(message(both["text"], channel="C2", channel_type="channel", ts=both["ts"],
                              thread_ts=start["ts"]))
        await h.event(both)
        await h.settle()
    posts = fake.posts()
    assert len(posts) == 3
    assert all(p["channel"] == "C2" and p["thread_ts"] == start["ts"] for p in posts)


async def test_web_api_errors_are_logged_not_fatal(start_app: StartApp, fake: FakeSlack) -> None:
    async with start_app(ScriptedBackend(reply="Fine.")) as h:
        fake.fail("chat.postMessage", "not_in_channel")
        await h.event(mention("hi", channel="C9"))
        await h.settle()
        fake.fail("chat.postMessage", "ratelimited")  # retried after Retry-After
        await h.event(mention("hi again", channel="C9"))
        await h.settle()
        fake.fail("chat.getPermalink", "channel_not_found")
        fake.fail("chat.postMessage", "msg_too_long")
        await h.event(mention("third", channel="C9"))
        await h.settle()
        await h.event(mention("fourth", channel="C9"))
        await h.settle()
    attempts = fake.calls_to("chat.postMessage")
    assert len(attempts) == 5  # refused; ratelimited then retried; refused; ok
    assert [c.args["channel"] for c in attempts] == ["C9"] * 5


async def test_a_dropped_connection_while_reading_the_message_still_gets_a_reply(
    start_app: StartApp, fake: FakeSlack
) -> None:
    async with start_app(ScriptedBackend(reply="Still here.")) as h:
        fake.fail("users.info", "disconnect", times=5)  # more often than the client retries
        await h.event(mention("hi", channel="C1"))
        await h.settle()
    assert 1 < len(fake.calls_to("users.info")) < 5  # retried, then given up: the user's id stands in
    [posted] = fake.calls_to("chat.postMessage")
    assert posted.args["channel"] == "C1" and "Still here."[: len(posted.args["text"])] == posted.args["text"]


async def test_permalink_falls_back_to_the_team_url(start_app: StartApp, fake: FakeSlack) -> None:
    async with start_app() as h:
        fake.fail("chat.getPermalink", "channel_not_found")
        msg = await h.running.adapter.to_message(
            mention("x", channel="C3", ts="1700000001.000200", thread_ts="1700000000.000100"),
            "T0TEAM", "U0BOT",
        )
    assert msg.link == (
        "https://acme.slack.com/archives/C3/p1700000001000200?thread_ts=1700000000.000100&cid=C3"
    )
    assert msg.platform == "slack" and msg.workspace == "T0TEAM" and msg.thread_id == "1700000000.000100"
    assert msg.text == "x" and msg.user_name == "name-U1"


async def test_deleted_messages_are_forgotten(start_app: StartApp, fake: FakeSlack) -> None:
    backend = ScriptedBackend(reply="noted")
    user = UserRef("slack", TEAM_ID, "U1")
    async with start_app(backend) as h:
        said = {}
        for fact, event in [("The user likes green tea", message("I like green tea", channel="D9")),
                            ("The user has a cat", mention("I have a cat", channel="C7")),
                            ("The user plays chess", mention("I play chess", channel="C7"))]:
            backend.facts = [fact]
            said[fact] = event
            await h.event(event)
            await h.settle()

        async def facts() -> list[str]:
            return sorted(r.text for r in (await h.bot.memories.controls.list(user)).records)

        assert await facts() == ["The user has a cat", "The user likes green tea", "The user plays chess"]
        tea = said["The user likes green tea"]
        await h.event({"type": "message", "subtype": "message_deleted", "hidden": True, "channel": "D9",
                       "channel_type": "im", "ts": next_ts(), "deleted_ts": tea["ts"],
                       "previous_message": {"type": "message", "user": "U1", "text": tea["text"], "ts": tea["ts"]}})
        await h.settle()
        assert await facts() == ["The user has a cat", "The user plays chess"]
        # the bot answered in the mention's thread, so deleting the mention leaves a tombstone: a change
        cat = said["The user has a cat"]
        await h.event({"type": "message", "subtype": "message_changed", "hidden": True, "channel": "C7",
                       "channel_type": "channel", "ts": next_ts(),
                       "message": {"type": "message", "subtype": "tombstone", "text": "This message was deleted.",
                                   "user": "USLACKBOT", "hidden": True, "ts": cat["ts"], "thread_ts": cat["ts"]},
                       "previous_message": {"type": "message", "user": "U1", "text": cat["text"], "ts": cat["ts"]}})
        await h.settle()
        assert await facts() == ["The user plays chess"]
        # the same ts in another channel is another message
        await h.event({"type": "message", "subtype": "message_deleted", "hidden": True, "channel": "C8",
                       "channel_type": "channel", "ts": next_ts(), "deleted_ts": said["The user plays chess"]["ts"]})
        await h.settle()
        assert await facts() == ["The user plays chess"]


def changed(channel: str, channel_type: str, before: dict, text: str) -> dict:
    """A `message_changed` event: `before` (a message event) now says `text`."""
    after = {key: before[key] for key in ("type", "user", "ts") if key in before}
    after.update(text=text, edited={"user": before["user"], "ts": next_ts()})
    if "thread_ts" in before:
        after["thread_ts"] = before["thread_ts"]
    return {"type": "message", "subtype": "message_changed", "hidden": True, "channel": channel,
            "channel_type": channel_type, "ts": next_ts(), "message": after,
            "previous_message": {k: before[k] for k in ("type", "user", "text", "ts")}}


async def test_edited_messages_are_relearned_without_a_reply(start_app: StartApp, fake: FakeSlack) -> None:
    backend = ScriptedBackend(reply="noted", facts=["The user lives in Lisbon"])
    user = UserRef("slack", TEAM_ID, "U1")
    async with start_app(backend) as h:

        async def facts() -> list[str]:
            return sorted(r.text for r in (await h.bot.memories.controls.list(user)).records)

        dm = message("I live in Lisbon", channel="D9")
        await h.event(dm)
        await h.settle()
        assert await facts() == ["The user lives in Lisbon"]
        posts, calls = len(fake.posts()), len(backend.calls)
        await h.event(changed("D9", "im", dm, dm["text"]))  # a link unfurled: same text, nothing to do
        await h.settle()
        assert len(backend.calls) == calls and await facts() == ["The user lives in Lisbon"]
        backend.facts = ["The user lives in Porto"]
        await h.event(changed("D9", "im", dm, "sorry, I live in Porto"))
        await h.settle()
        assert await facts() == ["The user lives in Porto"] and len(fake.posts()) == posts
        backend.facts = ["The user plays chess"]
        chess = mention("I play chess", channel="C7")
        await h.event(chess)
        await h.settle()
        assert await facts() == ["The user lives in Porto", "The user plays chess"]
        await h.event(changed("C7", "channel", dict(chess, thread_ts=chess["ts"]), "I play chess"))  # no mention
        await h.settle()
        assert await facts() == ["The user lives in Porto"]
