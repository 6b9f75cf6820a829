"""The whole way with the bundled model: a fact said to the bot in a channel shows up in `/memory list`."""

from __future__ import annotations

import json

import aiohttp
import pytest

from adapters.slack.server import make_client, start_slack
from bot.app import MemoryBot
from bot.settings import Settings
from tests.adapters.slack.conftest import Harness, mention, slack_settings
from tests.adapters.slack.fake_slack import FakeSlack


@pytest.mark.slow
async def test_real_model_learns_a_fact_from_a_channel(fake: FakeSlack, real_settings: Settings) -> None:
    slack = slack_settings()
    async with (
        MemoryBot(real_settings) as bot,  # a fresh DATA_DIR whose models/ is the shared cache
        start_slack(bot, slack, client=make_client(slack, base_url=fake.base_url)) as running,
        aiohttp.ClientSession() as http,
    ):
        h = Harness(fake, bot, running, backend=None, http=http)
        await h.event(mention("My name is Dana and I am vegetarian"))
        await h.settle()
        assert fake.posts(), "the bot did not answer"
        await h.command("list")
        await h.settle()
    listing = json.dumps(fake.responses[-1]).lower()
    assert "vegetarian" in listing or "meat" in listing, listing
