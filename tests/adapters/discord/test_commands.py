"""Slash commands against the fake Discord: ephemeral answers, the memory operations behind them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.commands import COMMANDS, Command
from bot.errors import COMMAND_FAILED
from bot.message import UserRef
from bot.settings import Settings
from tests.adapters.discord.conftest import Running, StartBot
from tests.adapters.discord.fake_discord import FakeDiscord, Recorded
from tests.bot.helpers import sample_arg
from tests.fakes.model import ScriptedBackend

EPHEMERAL = 64
DEFERRED = 5
MESSAGE = 4
DEFERRED_UPDATE = 6
UPDATE_MESSAGE = 7


async def command(running: Running, user: dict[str, Any], name: str, **options: Any) -> list[Recorded]:
    """Run a slash command that defers; return [callback, follow-up]."""
    return await running.run_command(running.fake.command(user, name, options), count=2)


def assert_ephemeral_answer(requests: list[Recorded]) -> str:
    callback, followup = requests
    assert callback.path.endswith("/callback")
    assert callback.json["type"] == DEFERRED and callback.flags & EPHEMERAL
    assert followup.method == "POST" and followup.path.startswith("/webhooks/")
    assert followup.flags & EPHEMERAL
    return followup.json["content"]


async def test_pause_and_resume_answer_ephemerally(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot()
    alice = fake.user("alice")
    assert "Paused" in assert_ephemeral_answer(await command(running, alice, "pause"))
    assert await running.bot.memories.controls.is_paused(_ref(fake, alice))
    assert "Resumed" in assert_ephemeral_answer(await command(running, alice, "resume"))
    assert not await running.bot.memories.controls.is_paused(_ref(fake, alice))


async def test_remember_list_and_forget(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot()
    alice = fake.user("alice")
    answer = assert_ephemeral_answer(await command(running, alice, "remember", text="I prefer short answers"))
    assert "I prefer short answers" in answer
    listing = assert_ephemeral_answer(await command(running, alice, "memories"))
    [record] = (await running.bot.memories.controls.list(_ref(fake, alice))).records
    assert f"1. `{record.id}` I prefer short answers" in listing
    assert f"[source](<https://discord.com/channels/{fake.guild_id}/{fake.channel_id}>)" in listing
    assert "<t:" in listing  # the date, shown in the reader's own locale
    assert "Forgotten" in assert_ephemeral_answer(await command(running, alice, "forget", id=record.id))
    assert "no memory" in assert_ephemeral_answer(await command(running, alice, "forget", id=record.id))
    assert "anything" in assert_ephemeral_answer(await command(running, alice, "memories"))


async def test_bad_input_is_shown_to_the_user(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot()
    answer = assert_ephemeral_answer(await command(running, fake.user("alice"), "memories", page=9))
    assert "no page 9" in answer


async def test_forget_all_asks_for_confirmation(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot()
    alice = fake.user("alice")
    for text in ("I like tea", "I live in Lyon"):
        await command(running, alice, "remember", text=text)
    deferred, prompt = await running.run_command(fake.command(alice, "forget-all"), count=2)
    assert deferred.json["type"] == DEFERRED and prompt.flags & EPHEMERAL
    assert "all 2 memories" in prompt.json["content"]
    buttons = _buttons(prompt)
    assert set(buttons) == {"Forget everything", "Cancel"}
    assert (await running.bot.memories.controls.list(_ref(fake, alice))).total == 2

    message_id = fake.last_response_message_id
    click = fake.button_click(alice, buttons["Forget everything"], message_id)
    deferred, done = await running.run_command(click, 2)
    assert deferred.json["type"] == DEFERRED_UPDATE  # answered at once: deleting may take a while
    assert done.method == "PATCH" and done.path.endswith("/messages/@original")
    assert "forgot 2 memories" in done.json["content"] and done.json["components"] == []
    assert (await running.bot.memories.controls.list(_ref(fake, alice))).total == 0


async def test_forget_all_cancel_keeps_everything(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot()
    alice = fake.user("alice")
    await command(running, alice, "remember", text="I like tea")
    _, prompt = await running.run_command(fake.command(alice, "forget-all"), count=2)
    buttons = _buttons(prompt)
    message_id = fake.last_response_message_id
    [done] = await running.run_command(fake.button_click(alice, buttons["Cancel"], message_id), 1)
    assert "nothing was forgotten" in done.json["data"]["content"]
    assert (await running.bot.memories.controls.list(_ref(fake, alice))).total == 1


async def test_export_sends_a_json_file(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot()
    alice = fake.user("alice")
    await command(running, alice, "remember", text="I like tea")
    callback, followup = await command(running, alice, "export")
    assert callback.flags & EPHEMERAL and followup.flags & EPHEMERAL
    assert followup.json["allowed_mentions"]["parse"] == []  # the client-wide default applies too
    [upload] = followup.files
    assert upload.filename == "memories.json"
    data = json.loads(upload.content)
    assert [m["text"] for m in data["memories"]] == ["I like tea"]
    assert data["user"]["user_id"] == alice["id"]


async def test_export_of_nothing_says_so(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot()
    answer = assert_ephemeral_answer(await command(running, fake.user("alice"), "export"))
    assert "nothing to export" in answer


async def test_search_and_why(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot(backend=ScriptedBackend(reply="Try a lentil curry."))
    alice = fake.user("alice")
    await command(running, alice, "remember", text="I am vegetarian")
    found = assert_ephemeral_answer(await command(running, alice, "search", query="food diet"))
    assert "I am vegetarian" in found
    assert "used no memories" in assert_ephemeral_answer(await command(running, alice, "why"))
    await running.say(fake.message(alice, f"{fake.mention()} what should I eat tonight?", mentions=[fake.bot_user]))
    assert "I am vegetarian" in assert_ephemeral_answer(await command(running, alice, "why"))
    bob = fake.user("bob")
    assert "matches" in assert_ephemeral_answer(await command(running, bob, "search", query="vegetarian"))


async def test_fact_said_in_a_guild_is_listed_by_memories(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot(backend=ScriptedBackend(reply="Noted!", facts=["The user is vegetarian"]))
    alice = fake.user("alice")
    msg = await running.say(fake.message(alice, f"{fake.mention()} I'm vegetarian", mentions=[fake.bot_user]))
    await running.bot.writeback.drain(timeout=30)
    listing = assert_ephemeral_answer(await command(running, alice, "memories"))
    assert "The user is vegetarian" in listing
    assert f"https://discord.com/channels/{fake.guild_id}/{fake.channel_id}/{msg['id']}" in listing


@pytest.mark.slow
async def test_real_model_learns_a_fact_from_a_guild_message(
    start_bot: StartBot, fake: FakeDiscord, real_settings: Settings
) -> None:
    # real_settings: a fresh DATA_DIR whose models/ links to the shared model cache
    running = await start_bot(real_model=True, data_dir=real_settings.data_dir)
    alice = fake.user("alice")
    await running.say(fake.message(alice, f"{fake.mention()} I'm vegetarian, so no meat for me please.",
                                   mentions=[fake.bot_user]), timeout=600)
    assert fake.shown(fake.channel_id)
    await running.bot.writeback.drain(timeout=600)
    listing = assert_ephemeral_answer(await command(running, alice, "memories"))
    assert "vegetarian" in listing.lower()



def _buttons(prompt: Recorded) -> dict[str, str]:
    """Button label -> custom_id of a follow-up message."""
    rows = prompt.json["components"]
    return {button["label"]: button["custom_id"] for row in rows for button in row["components"]}


def _ref(fake: FakeDiscord, user: dict[str, Any]) -> UserRef:
    return UserRef("discord", fake.guild_id, user["id"])


async def test_access_rules_apply_to_commands_that_store_or_search(start_bot: StartBot, fake: FakeDiscord) -> None:
    running = await start_bot(blocked_roles=frozenset({fake.role_id}))
    muted = fake.user("muted")

    async def as_muted(name: str, **options: Any) -> str:
        payload = fake.command(muted, name, options, roles=[fake.role_id])
        return assert_ephemeral_answer(await running.run_command(payload, count=2))

    assert "can't do that" in await as_muted("remember", text="I like tea")
    assert "can't do that" in await as_muted("search", query="tea")
    assert "anything" in await as_muted("memories")  # seeing and deleting one's data stays open
    assert (await running.bot.memories.controls.list(_ref(fake, muted))).total == 0
    assert "tea" in assert_ephemeral_answer(await command(running, fake.user("alice"), "remember", text="I like tea"))


async def test_every_command_of_the_table_is_a_slash_command(start_bot: StartBot, fake: FakeDiscord) -> None:
    await start_bot()
    registered = {c["name"]: c for c in fake.commands}
    assert set(registered) == {command.name for command in COMMANDS}
    page = registered["memories"]["options"][0]
    assert (page["name"], page["type"], page["required"]) == ("page", 4, False)  # an optional integer


@pytest.mark.parametrize("table_command", COMMANDS, ids=lambda c: c.name)
async def test_every_command_answers(start_bot: StartBot, fake: FakeDiscord, table_command: Command) -> None:
    running = await start_bot()
    alice = fake.user("alice")
    value = sample_arg(table_command)
    options = {table_command.arg.name: int(value) if table_command.arg.kind is int else value} \
        if table_command.arg else {}
    callback, answer = await running.run_command(fake.command(alice, table_command.name, options), count=2)
    assert callback.json["type"] == DEFERRED and answer.flags & EPHEMERAL
    assert answer.json["content"] and answer.json["content"] != COMMAND_FAILED
