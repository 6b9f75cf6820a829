"""Startup checks: missing or refused credentials are clear errors naming the variable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.platform import serve
from adapters.slack.server import SlackPlatform, check_token, make_client
from bot.settings import Secret, SettingsError
from tests.adapters.slack.conftest import slack_settings
from tests.adapters.slack.fake_slack import FakeSlack
from tests.conftest import settings_for
from tests.fakes.model import ScriptedBackend


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"slack_bot_token": Secret("")}, "SLACK_BOT_TOKEN"),
        ({"slack_bot_token": Secret("xapp-wrong-kind")}, "SLACK_BOT_TOKEN"),
        ({"slack_signing_secret": Secret("")}, "SLACK_SIGNING_SECRET"),
        ({"slack_app_token": Secret("xoxb-wrong-kind")}, "SLACK_APP_TOKEN"),
    ],
)
def test_missing_or_malformed_credentials_name_the_variable(
    tmp_path: Path, overrides: dict[str, Secret], variable: str
) -> None:
    with pytest.raises(SettingsError, match=variable):
        slack_settings(**overrides)


def test_socket_mode_needs_no_signing_secret(tmp_path: Path) -> None:
    assert slack_settings(slack_app_token=Secret("xapp-1"), slack_signing_secret=Secret("")).socket_mode


async def test_a_refused_token_is_a_startup_error(fake: FakeSlack, tmp_path: Path) -> None:
    client = make_client(slack_settings(), base_url=fake.base_url)
    await check_token(client)
    fake.fail("auth.test", "invalid_auth")
    with pytest.raises(SettingsError, match="SLACK_BOT_TOKEN.*invalid_auth"):
        await check_token(client)


async def test_the_platform_checks_the_token_before_the_model_loads(fake: FakeSlack, tmp_path: Path) -> None:
    fake.fail("auth.test", "invalid_auth")
    platform = SlackPlatform(slack_settings(), client=make_client(slack_settings(), base_url=fake.base_url))
    with pytest.raises(SettingsError, match="SLACK_BOT_TOKEN"):
        await serve(platform, settings_for(tmp_path / "data"), backend=ScriptedBackend())
    assert not (tmp_path / "data").exists()


async def test_the_platform_serves_until_stopped(fake: FakeSlack, tmp_path: Path) -> None:
    platform = SlackPlatform(slack_settings(), client=make_client(slack_settings(), base_url=fake.base_url))
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(platform, settings_for(tmp_path), backend=ScriptedBackend(), stop=stop))
    while not fake.calls_to("auth.test"):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(serving, 60)
