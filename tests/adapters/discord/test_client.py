"""The Discord client against the fake Discord: handshake, which messages get answers, and where."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import pytest

from adapters.discord import DiscordPlatform
from adapters.discord.settings import DiscordSettings
from adapters.platform import serve
from bot.commands import COMMANDS
from bot.errors import REPLY_FAILED
from bot.message import UserRef
from bot.settings import SettingsError, load_group
from tests.adapters.discord.conftest import StartBot, discord_settings
from tests.adapters.discord.fake_discord import FakeDiscord
from tests.conftest import settings_for
from tests.fakes.model import ScriptedBackend

MESSAGE_CONTENT_INTENT = 1 << 15
REPO = Path(__file__).resolve().parents[3]


def test_a_missing_token_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    with pytest.raises(SettingsError, match="DISCORD_TOKEN"):
        load_group(DiscordSettings, env_file=None)


async def test_login_identify_and_command_sync(start_bot: StartBot, fake: FakeDiscord) -> None:
    await start_bot()
    paths = [(r.method, r.path) for r in fake.requests]
    assert ("GET", "/users/@me") in paths
    assert ("GET", "/oauth2/applications/@me") in paths
    assert fake.identify is not None and fake.identify["intents"] & MESSAGE_CONTENT_INTENT
    assert fake.identify["shard"] == [0, 1]  # unsharded: the one shard Discord recommends for a small bot
    assert {c["name"] for c in fake.commands} == {c.name for c in COMMANDS}
    options = {c["name"]: [o["name"] for o in c.get("options", [])] for c in fake.commands}
    assert (options["forget"], options["remember"], options["memories"]) == (["id"], ["text"], ["page"])


async def test_mention_gets_a_reply_that_references_it_and_pings_nobody_else(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    reply = "@everyone hi <@&123> <@456>"
    running = await start_bot(backend=ScriptedBackend(reply=reply))
    alice = fake.user("alice")
    msg = await running.say(fake.message(alice, f"{fake.mention()} hello", mentions=[fake.bot_user]))
    [sent] = running.replies(fake.channel_id)
    assert sent.reference == msg["id"]
    assert fake.shown(fake.channel_id) == [reply]
    safe = {"parse": [], "users": [int(alice["id"])], "replied_user": True}
    edits = fake.sent("PATCH", r"/messages/\d+$")
    assert [r.json["allowed_mentions"] for r in [sent, *edits]] == [safe] * (1 + len(edits))
    assert fake.sent("POST", rf"/channels/{fake.channel_id}/typing$")


async def test_ignored_messages_get_nothing(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot()
    alice = fake.user("alice")
    before = len(fake.requests)
    await running.say(fake.message(fake.user("otherbot", bot=True), f"{fake.mention()} hi",
                                   mentions=[fake.bot_user]))
    await running.say(fake.message(fake.bot_user, f"{fake.mention()} me", mentions=[fake.bot_user]))
    await running.say(fake.message(alice, "just chatting with friends"))
    everyone = fake.message(alice, "@everyone look")
    everyone["mention_everyone"] = True
    await running.say(everyone)
    assert fake.requests[before:] == []


async def test_blocked_role_gets_nothing(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot(blocked_roles=frozenset({fake.role_id}))
    alice = fake.user("alice")
    await running.say(fake.message(alice, f"{fake.mention()} hi", mentions=[fake.bot_user],
                                   roles=[fake.role_id]))
    assert running.incoming and running.replies(fake.channel_id) == []


async def test_direct_message_is_answered_without_mention(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot(backend=ScriptedBackend(reply="hi in DM"))
    msg = await running.say(fake.message(fake.user("alice"), "hello there", dm=True))
    [sent] = running.replies(fake.dm_channel_id)
    assert sent.reference == msg["id"]
    assert fake.shown(fake.dm_channel_id) == ["hi in DM"]


async def test_reply_to_the_bot_is_answered(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot()
    earlier = fake.message(fake.bot_user, "I said something")
    msg = await running.say(fake.message(fake.user("alice"), "and I answer", reply_to=earlier))
    [sent] = running.replies(fake.channel_id)
    assert sent.reference == msg["id"]


async def test_thread_message_is_answered_in_the_thread(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot()
    msg = await running.say(fake.message(fake.user("alice"), f"{fake.mention()} in a thread",
                                         channel_id=fake.thread_id, mentions=[fake.bot_user]))
    [sent] = running.replies(fake.thread_id)
    assert sent.reference == msg["id"]
    assert running.replies(fake.channel_id) == []


async def test_respond_channel_answers_every_message(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot(respond_channels=frozenset({fake.channel_id}))
    msg = await running.say(fake.message(fake.user("alice"), "no mention needed here"))
    [sent] = running.replies(fake.channel_id)
    assert sent.reference == msg["id"]


async def test_respond_channel_leaves_posts_without_text_alone(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot(respond_channels=frozenset({fake.channel_id}))
    before = len(fake.requests)
    image_only = fake.message(fake.user("alice"), "")
    image_only["attachments"] = [{"id": fake.new_id(), "filename": "cat.png", "size": 10,
                                  "url": "https://cdn.example/cat.png", "proxy_url": "https://cdn.example/cat.png"}]
    await running.say(image_only)
    assert fake.requests[before:] == []


async def test_mentioning_the_bots_role_counts_as_a_mention(start_bot: StartBot, fake: FakeDiscord) -> None:
    seen = []
    running = await start_bot(backend=ScriptedBackend(reply=lambda messages: seen.append(messages) or "hi"))
    await running.say(fake.message(fake.user("alice"), f"<@&{fake.bot_role_id}> what's up?",
                                   mention_roles=[fake.bot_role_id]))
    assert len(running.replies(fake.channel_id)) == 1
    assert seen[0][-1].content == "what's up?"


async def test_rate_limited_user_gets_a_polite_message(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot(backend=ScriptedBackend(reply="first answer"), rate_limit_messages=1)
    alice = fake.user("alice")
    await running.say(fake.message(alice, f"{fake.mention()} one", mentions=[fake.bot_user]))
    second = await running.say(fake.message(alice, f"{fake.mention()} two", mentions=[fake.bot_user]))
    _, limited = running.replies(fake.channel_id)
    assert limited.reference == second["id"]
    assert "wait" in limited.json["content"]
    assert limited.json["allowed_mentions"]["parse"] == []


async def test_deleted_source_message_gets_a_plain_message(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot(backend=ScriptedBackend(reply="still here"))
    fake.fail("POST", r"/channels/\d+/messages$", 400, 50035, "Invalid Form Body")
    await running.say(fake.message(fake.user("alice"), f"{fake.mention()} hi", mentions=[fake.bot_user]))
    rejected, sent = running.replies(fake.channel_id)
    assert rejected.reference is not None
    assert sent.reference is None
    assert fake.shown(fake.channel_id) == ["still here"]


async def test_missing_permission_is_logged_and_memory_still_learned(
    start_bot: StartBot, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start_bot(backend=ScriptedBackend(facts=["The user likes tea"]))
    fake.fail("POST", r"/channels/\d+/(typing|messages)$", 403, 50013, "Missing Permissions", times=99)
    alice = fake.user("alice")
    with caplog.at_level(logging.WARNING, logger="adapters.discord"):
        msg = await running.say(fake.message(alice, f"{fake.mention()} I like tea", mentions=[fake.bot_user]))
    assert "no permission" in caplog.text
    assert not [r for r in running.replies(fake.channel_id) if r.json["content"] == REPLY_FAILED]
    await running.bot.writeback.drain(timeout=30)
    page = await running.bot.memories.controls.list(UserRef("discord", fake.guild_id, alice["id"]))
    assert [r.text for r in page.records] == ["The user likes tea"]
    link = f"https://discord.com/channels/{fake.guild_id}/{fake.channel_id}/{msg['id']}"
    assert page.records[0].source.link == link


async def test_deleted_messages_are_forgotten_one_by_one_or_in_bulk(start_bot: StartBot, fake: FakeDiscord) -> None:
    backend = ScriptedBackend(reply="noted")
    running = await start_bot(backend=backend)
    alice = fake.user("alice")
    said = {}
    for fact, text in [("The user likes green tea", "I like green tea"), ("The user has a cat", "I have a cat"),
                       ("The user plays chess", "I play chess"), ("The user sings", "I sing")]:
        backend.facts = [fact]
        said[fact] = await running.say(fake.message(alice, f"{fake.mention()} {text}", mentions=[fake.bot_user],
                                                    dm=fact == "The user sings"))
        await running.bot.writeback.drain(timeout=30)
    guild, dms = UserRef("discord", fake.guild_id, alice["id"]), UserRef("discord", "dm", alice["id"])

    async def facts(user: UserRef) -> list[str]:
        return sorted(r.text for r in (await running.bot.memories.controls.list(user)).records)

    assert await facts(guild) == ["The user has a cat", "The user likes green tea", "The user plays chess"]
    await running.delete(said["The user likes green tea"])
    assert await facts(guild) == ["The user has a cat", "The user plays chess"]
    await running.delete(said["The user has a cat"], said["The user plays chess"])  # a moderator's purge
    assert await facts(guild) == []
    assert await facts(dms) == ["The user sings"]
    await running.delete(said["The user sings"])
    assert await facts(dms) == []


async def test_an_edited_message_is_relearned_without_a_reply(start_bot: StartBot, fake: FakeDiscord) -> None:
    backend = ScriptedBackend(reply="noted", facts=["The user lives in Lisbon"])
    running = await start_bot(backend=backend)
    alice = fake.user("alice")
    user = UserRef("discord", fake.guild_id, alice["id"])
    said = await running.say(fake.message(alice, f"{fake.mention()} I live in Lisbon", mentions=[fake.bot_user]))
    await running.bot.writeback.drain(timeout=30)

    async def facts() -> list[str]:
        return [r.text for r in (await running.bot.memories.controls.list(user)).records]

    assert await facts() == ["The user lives in Lisbon"]
    replies = len(running.replies(fake.channel_id))
    backend.facts = ["The user lives in Porto"]
    embed_only = dict(said, embeds=[{"type": "link", "url": "https://example.com"}])
    await fake.dispatch("MESSAGE_UPDATE", embed_only)  # not an edit: nothing is forgotten or relearned
    await running.edit(said, f"{fake.mention()} sorry, I live in Porto")
    await running.bot.writeback.drain(timeout=30)
    assert [m.text for m in running.edited] == ["sorry, I live in Porto"] and running.forgotten == []
    assert await facts() == ["The user lives in Porto"]
    assert len(running.replies(fake.channel_id)) == replies
    await running.edit(said, "I live in Porto", for_bot=False, mentions=[])  # no longer for the bot
    assert await facts() == []


async def test_unexpected_failure_gets_the_friendly_message(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot(backend=ScriptedBackend(reply="never shown"))
    fake.fail("POST", r"/channels/\d+/messages$", 400, 50006, "Cannot send an empty message")
    alice = fake.user("alice")
    msg = await running.say(fake.message(alice, f"{fake.mention()} hi", mentions=[fake.bot_user]))
    _, apology = running.replies(fake.channel_id)
    assert apology.json["content"] == REPLY_FAILED
    assert apology.reference == msg["id"]


async def test_thread_message_is_normalized_with_parent_channel_and_link(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    running = await start_bot()
    alice, bob = fake.user("alice"), fake.user("bob")
    text = f"{fake.mention()} ask <@{bob['id']}>"
    msg = await running.say(fake.message(alice, text, channel_id=fake.thread_id,
                                         mentions=[fake.bot_user, bob], roles=[fake.role_id]))
    [incoming] = running.incoming
    assert incoming.user == UserRef("discord", fake.guild_id, alice["id"])
    assert (incoming.channel_id, incoming.thread_id) == (fake.channel_id, fake.thread_id)
    assert incoming.link == f"https://discord.com/channels/{fake.guild_id}/{fake.thread_id}/{msg['id']}"
    assert incoming.text == "ask @bob"
    assert incoming.roles == (fake.role_id,)
    assert not incoming.is_direct


async def test_direct_message_is_normalized_as_dm(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot()
    msg = await running.say(fake.message(fake.user("alice"), "hello", dm=True))
    [incoming] = running.incoming
    assert (incoming.workspace, incoming.is_direct, incoming.thread_id) == ("dm", True, None)
    assert incoming.link == f"https://discord.com/channels/@me/{fake.dm_channel_id}/{msg['id']}"


async def test_serve_connects_and_stops(fake: FakeDiscord, tmp_path) -> None:
    platform = DiscordPlatform(discord_settings(), guild_ready_timeout=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(platform, settings_for(tmp_path), backend=ScriptedBackend(), stop=stop))
    await fake.wait_identified()
    stop.set()
    await asyncio.wait_for(task, 30)  # stopping returns normally, the connection closed


async def test_sigterm_shuts_the_bot_down_cleanly(fake: FakeDiscord, tmp_path) -> None:
    script = f"""
import logging, sys, discord, yarl
from pathlib import Path
from adapters.discord import DiscordPlatform
from adapters.platform import run
from tests.adapters.discord.conftest import discord_settings
from tests.conftest import settings_for
from tests.fakes.model import ScriptedBackend
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
discord.http.Route.BASE = {fake.url + "/api/v10"!r}
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL({fake.url + "/gateway"!r})
run(DiscordPlatform(discord_settings(), guild_ready_timeout=0.05), settings_for(Path({str(tmp_path)!r})),
    backend=ScriptedBackend())
"""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=REPO,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        await fake.wait_identified(timeout=120)  # a fresh process imports everything and loads the embedder
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, out.decode()
    assert "discord: shutting down" in out.decode() and "Traceback" not in out.decode()


async def test_serve_with_a_rejected_token_names_the_variable(fake: FakeDiscord, tmp_path) -> None:
    fake.fail("GET", r"^/users/@me$", 401, 0, "401: Unauthorized")
    with pytest.raises(SettingsError, match="DISCORD_TOKEN was rejected"):
        await serve(DiscordPlatform(discord_settings()), settings_for(tmp_path), backend=ScriptedBackend())


async def test_failed_command_registration_still_connects(
    start_bot: StartBot, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail("PUT", r"/commands$", 403, 50001, "Missing Access")
    with caplog.at_level(logging.WARNING, logger="adapters.discord"):
        running = await start_bot()
    assert "could not register the slash commands" in caplog.text
    msg = await running.say(fake.message(fake.user("alice"), "hi", dm=True))
    assert running.replies(fake.dm_channel_id)[0].reference == msg["id"]
