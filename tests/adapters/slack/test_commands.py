"""`/memory`, the forget-all confirmation and the App Home tab, over real HTTP against the real core."""

from __future__ import annotations

import json

import pytest

from adapters.slack.commands import CANCEL, CONFIRM, HOME_FORGET
from bot.commands import COMMANDS, Command
from bot.errors import COMMAND_FAILED
from tests.adapters.slack.conftest import StartApp, mention
from tests.adapters.slack.fake_slack import FakeSlack
from tests.bot.helpers import sample_arg
from tests.fakes.model import ScriptedBackend


async def test_a_fact_said_in_a_channel_is_listed_afterwards(start_app: StartApp, fake: FakeSlack) -> None:
    async with start_app(ScriptedBackend(reply="Noted!", facts=["The user is vegetarian"])) as h:
        event = mention("I'm vegetarian, by the way", channel="C1")
        await h.event(event)
        await h.settle()
        assert await h.command("list") == 200
        await h.settle()
    [listing] = fake.responses
    assert listing["response_type"] == "ephemeral"
    assert "The user is vegetarian" in listing["text"]
    assert f"archives/C1/p{event['ts'].replace('.', '')}" in listing["text"]  # provenance: the permalink


async def test_remember_list_forget_pause_resume(start_app: StartApp, fake: FakeSlack) -> None:
    async with start_app() as h:
        remembered = await h.ask("remember I like <b>tea</b> & biscuits")
        memory_id = remembered.split("id `")[1].split("`")[0]
        assert "&lt;b&gt;tea&lt;/b&gt; &amp; biscuits" in remembered

        listing = await h.ask("list")
        assert memory_id in listing and "tea" in listing
        assert "what to remember" in (await h.ask("remember")).lower()  # the core's one-line UserError
        assert "/memory list" in await h.ask("list x")

        assert await h.ask(f"forget {memory_id}") == f"Forgotten: `{memory_id}`."
        assert "no memory" in await h.ask(f"forget {memory_id}")
        assert (await h.ask("pause")).startswith("Paused")
        assert (await h.ask("resume")).startswith("Resumed")
        assert "/memory list [page]" in await h.ask("what is this")
        assert "/memory list [page]" in await h.ask("")
    assert all(r["response_type"] == "ephemeral" for r in fake.responses)
    assert fake.posts() == []  # nothing was said in the channel


async def test_search_and_why(start_app: StartApp, fake: FakeSlack) -> None:
    async with start_app() as h:
        await h.ask("remember I am vegetarian")
        assert "I am vegetarian" in await h.ask("search food diet")
        assert "what to search" in await h.ask("search")  # the core's one-line answer for an empty query
        assert "Nothing" in await h.ask("search vegetarian", user="U2")  # never another user's memories
        assert "no memories" in await h.ask("why")


async def test_memories_belong_to_one_workspace(start_app: StartApp, fake: FakeSlack) -> None:
    async with start_app() as h:
        assert "Lisbon" in await h.ask("remember I live in Lisbon")
        assert "Lisbon" not in await h.ask("list", team_id="T0OTHER")
        assert "Lisbon" not in await h.ask("list", user="U2")
        assert "Lisbon" in await h.ask("list")


async def test_export_sends_a_json_file_to_the_dm(start_app: StartApp, fake: FakeSlack) -> None:
    async with start_app() as h:
        await h.ask("remember My cat is called Miso")
        await h.ask("export")
    assert fake.calls_to("conversations.open")[0].args["users"] == "U1"
    [complete] = fake.calls_to("files.completeUploadExternal")
    assert complete.args["channel_id"] == "DU1"
    [upload] = fake.uploads.values()
    data = json.loads(upload)
    assert [m["text"] for m in data["memories"]] == ["My cat is called Miso"]
    assert "direct messages" in fake.responses[-1]["text"]
    assert "1 memory" in fake.calls_to("files.completeUploadExternal")[0].args["initial_comment"]


async def test_forget_all_asks_for_confirmation(start_app: StartApp, fake: FakeSlack) -> None:
    async with start_app() as h:
        await h.ask("remember one")
        await h.ask("remember two")
        await h.ask("forget all")
        question = fake.responses[-1]
        buttons = question["blocks"][1]["elements"]
        assert [b["action_id"] for b in buttons] == [CONFIRM, CANCEL]
        assert "all 2" in question["text"]

        await h.click(CANCEL, buttons[1]["value"])
        await h.settle()
        assert fake.responses[-1]["replace_original"] is True
        assert fake.responses[-1]["text"] == "Cancelled: nothing was forgotten."
        await h.click(CONFIRM, buttons[0]["value"])
        await h.settle()
        done = fake.responses[-1]
        assert done["replace_original"] is True and "forgot 2 memories" in done["text"]
        assert "don't remember anything" in await h.ask("list")


async def test_app_home_lists_memories_with_forget_buttons(start_app: StartApp, fake: FakeSlack) -> None:
    async with start_app() as h:
        await h.ask("remember I play the cello")
        await h.event({"type": "app_home_opened", "user": "U1", "channel": "D1", "tab": "home",
                       "event_ts": "1.2"})
        await h.settle()
        [publish] = fake.calls_to("views.publish")
        view = publish.args["view"]
        view = json.loads(view) if isinstance(view, str) else view
        assert publish.args["user_id"] == "U1" and view["type"] == "home"
        [section] = [b for b in view["blocks"] if b["type"] == "section"]
        assert "cello" in section["text"]["text"]
        button = section["accessory"]
        assert button["action_id"].startswith(HOME_FORGET)

        await h.click(button["action_id"], button["value"], home=True)
        await h.settle()
    assert len(fake.calls_to("views.publish")) == 2
    after = fake.calls_to("views.publish")[-1].args["view"]
    after = json.loads(after) if isinstance(after, str) else after
    assert not [b for b in after["blocks"] if b["type"] == "section"]
    assert "Nothing yet" in json.dumps(after)


async def test_access_rules_apply_to_commands_that_store_or_search(start_app: StartApp, fake: FakeSlack) -> None:
    async with start_app(blocked_users=frozenset({"U9"}), blocked_channels=frozenset({"C7"}),
                         allowed_roles=frozenset({"R1"})) as h:  # Slack has no roles: that rule is Discord's
        assert "can't do that" in await h.ask("remember I am vegetarian", user="U9")
        assert "can't do that" in await h.ask("search food", user="U9")
        assert "can't do that" in await h.ask("remember I am vegetarian", channel="C7")
        assert "I am vegetarian" in await h.ask("remember I am vegetarian")
        assert "anything" in await h.ask("list", user="U9")  # seeing and deleting one's data stays open
    assert all(r["response_type"] == "ephemeral" for r in fake.responses)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
async def test_every_command_answers(start_app: StartApp, fake: FakeSlack, command: Command) -> None:
    async with start_app() as h:
        answer = await h.ask(f"{command.words} {sample_arg(command)}".strip())
    assert answer and answer != COMMAND_FAILED and "don't know that command" not in answer
    assert fake.responses[-1]["response_type"] == "ephemeral"


async def test_typed_confirm_asks_anyway_and_names_work_as_words(start_app: StartApp, fake: FakeSlack) -> None:
    async with start_app() as h:
        await h.ask("remember I like tea")
        await h.ask("forget all confirm")
        assert fake.responses[-1]["blocks"][1]["elements"][0]["action_id"] == CONFIRM  # still a question
        assert "no page 2" in await h.ask("memories 2")  # the command's name works like its words
        assert "I like tea" in await h.ask("list")
