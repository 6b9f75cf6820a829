"""Socket Mode: the fake's `apps.connections.open` hands out a local websocket that pushes envelopes."""

from __future__ import annotations

from pathlib import Path

from adapters.slack.server import make_client, start_slack
from bot.app import MemoryBot
from bot.settings import Secret
from tests.adapters.slack.conftest import event_body, mention, slack_settings
from tests.adapters.slack.fake_slack import TEAM_ID, FakeSlack
from tests.conftest import settings_for
from tests.fakes.model import ScriptedBackend


async def test_socket_mode_acks_envelopes_and_replies(fake: FakeSlack, tmp_path: Path) -> None:
    slack = slack_settings(slack_app_token=Secret("xapp-test"), slack_signing_secret=Secret(""))
    async with (
        MemoryBot(settings_for(tmp_path), backend=ScriptedBackend(reply="Hello over a socket & <!here>",
                                                                  chunk=200)) as bot,
        start_slack(bot, slack, client=make_client(slack, base_url=fake.base_url)) as running,
    ):
        assert running.url is None
        event = mention("hi", channel="C5")
        await fake.push({"envelope_id": "env-1", "type": "events_api", "accepts_response_payload": False,
                         "retry_attempt": 0, "retry_reason": "", "payload": event_body(event)})
        command = {"team_id": TEAM_ID, "channel_id": "C5", "user_id": "U1", "user_name": "alice",
                   "command": "/memory", "text": "remember I prefer tea", "response_url": fake.response_url(),
                   "trigger_id": "1.2.3", "api_app_id": "A0APP"}
        await fake.push({"envelope_id": "env-2", "type": "slash_commands", "accepts_response_payload": True,
                         "payload": command})
        await fake.wait_for(lambda: {"env-1", "env-2"} <= {a.get("envelope_id") for a in fake.acks})
        await fake.wait_for(lambda: len(fake.posts()) == 1 and len(fake.responses) == 1)
        await running.adapter.drain()

    assert fake.calls_to("apps.connections.open")[0].token == "xapp-test"
    [post] = fake.posts()
    assert post["channel"] == "C5" and post["thread_ts"] == event["ts"]
    assert post["text"] == "Hello over a socket &amp; &lt;!here&gt;"
    assert "I'll remember that: I prefer tea" in fake.responses[0]["text"]
