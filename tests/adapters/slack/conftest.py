"""Fixtures for the Slack adapter tests: a fake Slack, and the real bot + bolt app driven over real HTTP."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from slack_sdk.signature import SignatureVerifier

from adapters.slack.server import RunningSlack, make_client, start_slack
from adapters.slack.settings import SlackSettings
from bot.app import MemoryBot
from bot.settings import Secret, load_group
from tests.adapters.slack.fake_slack import BOT_USER_ID, TEAM_ID, FakeSlack
from tests.conftest import settings_for
from tests.fakes.model import ScriptedBackend

SIGNING_SECRET = "test-signing-secret"
_ids = itertools.count(1)


def next_ts() -> str:
    return f"{1710000000 + next(_ids)}.000{next(_ids):03d}"


def slack_settings(**overrides: Any) -> SlackSettings:
    """HTTP mode on a free port of 127.0.0.1; keyword arguments are settings by their variable's name in lower case
    (`slack_app_token=...`)."""
    values: dict[str, Any] = {
        "slack_bot_token": Secret("xoxb-test"),
        "slack_signing_secret": Secret(SIGNING_SECRET),
        "slack_app_token": Secret(""),
        "slack_http_host": "127.0.0.1",
        "slack_http_port": 0,
        **overrides,
    }
    return load_group(SlackSettings, env_file=None, **values)


def event_body(event: dict[str, Any], event_id: str | None = None, team_id: str = TEAM_ID) -> dict[str, Any]:
    return {
        "token": "legacy", "team_id": team_id, "api_app_id": "A0APP", "type": "event_callback",
        "event_id": event_id or f"Ev{next(_ids)}", "event_time": int(time.time()), "event": event,
        "authorizations": [{"team_id": team_id, "user_id": BOT_USER_ID, "is_bot": True}],
    }


def mention(text: str, channel: str = "C1", user: str = "U1", ts: str | None = None,
            **extra: Any) -> dict[str, Any]:
    ts = ts or next_ts()
    return {"type": "app_mention", "user": user, "text": f"<@{BOT_USER_ID}> {text}", "ts": ts,
            "channel": channel, "event_ts": ts, **extra}


def message(text: str, channel: str = "D1", user: str = "U1", channel_type: str = "im",
            **extra: Any) -> dict[str, Any]:
    ts = extra.pop("ts", None) or next_ts()
    return {"type": "message", "user": user, "text": text, "ts": ts, "channel": channel,
            "channel_type": channel_type, "event_ts": ts, **extra}


FORM = "application/x-www-form-urlencoded"


def signed_headers(body: str, content_type: str, *, timestamp: int | None = None, secret: str = SIGNING_SECRET,
                   retry: int | None = None) -> dict[str, str]:
    """The headers Slack sends with `body`: its signature, and on a redelivery the retry's number."""
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body),
    }
    if retry is not None:
        headers["X-Slack-Retry-Num"] = str(retry)
        headers["X-Slack-Retry-Reason"] = "http_timeout"
    return headers


def command_form(text: str, *, user: str, channel: str, team_id: str, response_url: str) -> str:
    """The form body of `/memory <text>` typed by `user` in `channel`."""
    return urlencode({
        "token": "legacy", "team_id": team_id, "team_domain": "acme", "channel_id": channel,
        "channel_name": "directmessage" if channel.startswith("D") else "general", "user_id": user,
        "user_name": "alice", "command": "/memory", "text": text, "api_app_id": "A0APP",
        "response_url": response_url, "trigger_id": "1.2.3",
    })


def click_form(action_id: str, value: str, *, user: str, response_url: str | None) -> str:
    """The form body of `user` clicking a button: under an ephemeral answer (which has a `response_url`), or on
    the App Home tab (`response_url=None`)."""
    payload: dict[str, Any] = {
        "type": "block_actions", "user": {"id": user, "team_id": TEAM_ID}, "team": {"id": TEAM_ID},
        "api_app_id": "A0APP", "trigger_id": "1.2.3",
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": value,
                     "action_ts": str(time.time())}],
    }
    if response_url is None:
        payload["container"] = {"type": "view", "view_id": "V1"}
        payload["view"] = {"id": "V1", "type": "home", "team_id": TEAM_ID}
    else:
        payload["container"] = {"type": "message", "message_ts": "1.2", "channel_id": "C1", "is_ephemeral": True}
        payload["channel"] = {"id": "C1"}
        payload["response_url"] = response_url
    return urlencode({"payload": json.dumps(payload)})


@dataclass
class Harness:
    """The running app plus helpers that send signed requests to it the way Slack does."""

    fake: FakeSlack
    bot: MemoryBot
    running: RunningSlack
    backend: ScriptedBackend | None  # None with the real model
    http: aiohttp.ClientSession

    async def post(
        self, body: str, content_type: str, *, timestamp: int | None = None, secret: str = SIGNING_SECRET,
        retry: int | None = None,
    ) -> int:
        headers = signed_headers(body, content_type, timestamp=timestamp, secret=secret, retry=retry)
        assert self.running.url is not None
        async with self.http.post(self.running.url, data=body.encode(), headers=headers) as response:
            await response.read()
            return response.status

    async def event(self, event: dict[str, Any], *, event_id: str | None = None, team_id: str = TEAM_ID,
                    **kwargs: Any) -> int:
        body = json.dumps(event_body(event, event_id, team_id))
        return await self.post(body, "application/json", **kwargs)

    async def command(self, text: str, *, user: str = "U1", channel: str = "C1",
                      team_id: str = TEAM_ID) -> int:
        form = command_form(text, user=user, channel=channel, team_id=team_id, response_url=self.fake.response_url())
        return await self.post(form, FORM)

    async def ask(self, text: str, **kwargs: Any) -> str:
        """Run `/memory <text>` to the end; return the text of the answer."""
        before = len(self.fake.responses)
        assert await self.command(text, **kwargs) == 200
        await self.settle()
        assert len(self.fake.responses) == before + 1
        return str(self.fake.responses[-1].get("text", ""))

    async def click(self, action_id: str, value: str, *, user: str = "U1", home: bool = False) -> int:
        form = click_form(action_id, value, user=user, response_url=None if home else self.fake.response_url())
        return await self.post(form, FORM)

    async def settle(self) -> None:
        """Wait until the app has finished every reply and command, and write-back has stored facts."""
        await self.running.adapter.drain()
        await self.bot.writeback.drain(timeout=60)

    def responses_text(self) -> list[str]:
        return [str(r.get("text", "")) for r in self.fake.responses]


StartApp = Callable[..., AbstractAsyncContextManager[Harness]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as slack:
        yield slack


@pytest.fixture
def start_app(fake: FakeSlack, tmp_path: Path) -> StartApp:
    """`async with start_app(backend, **settings) as h:` runs MemoryBot + the Slack app in HTTP mode."""

    @asynccontextmanager
    async def start(backend: ScriptedBackend | None = None, **overrides: Any) -> AsyncIterator[Harness]:
        backend = backend or ScriptedBackend()
        slack = slack_settings()
        client = make_client(slack, base_url=fake.base_url)
        async with (
            MemoryBot(settings_for(tmp_path, **overrides), backend=backend) as bot,
            start_slack(bot, slack, client=client) as running,
            aiohttp.ClientSession() as http,
        ):
            yield Harness(fake, bot, running, backend, http)

    return start
