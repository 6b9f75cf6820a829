"""Running the Slack app: Socket Mode when SLACK_APP_TOKEN is set, else HTTP mode.

HTTP mode serves the Events API, interactivity and slash commands on SLACK_HTTP_HOST:SLACK_HTTP_PORT at
`/slack/events` with our own aiohttp site (bolt's `start()` would bind 0.0.0.0); bolt verifies each
request's signature and age. `SlackPlatform` is what `memorybot slack` serves.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Self

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.app import SlackAdapter
from adapters.slack.reply import CALL_FAILED, api_error
from adapters.slack.settings import SlackSettings
from bot.app import MemoryBot
from bot.platform_state import PlatformState
from bot.settings import SettingsError, load_group

_log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
API_RETRIES = 4  # tries after the first of a Web API call Slack answered 429, 500 or 503


def make_client(settings: SlackSettings, base_url: str | None = None) -> AsyncWebClient:
    """The Web API client; `ratelimited` answers are retried after Slack's Retry-After, and 500 and 503 answers
    after 0.5, 1, 2 and 4 s (together at most API_RETRIES times a call): a reply is not lost to a short outage."""
    extra = {"base_url": base_url} if base_url else {}
    client = AsyncWebClient(token=settings.bot_token.reveal(), **extra)
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=API_RETRIES))
    client.retry_handlers.append(AsyncServerErrorRetryHandler(max_retry_count=API_RETRIES))
    return client


async def check_token(client: AsyncWebClient) -> None:
    try:
        identity = await client.auth_test()
    except SlackApiError as e:
        raise SettingsError(f"SLACK_BOT_TOKEN was refused by Slack: {api_error(e)}") from None
    except CALL_FAILED as e:
        raise SettingsError(f"could not reach Slack to check SLACK_BOT_TOKEN: {api_error(e)}") from None
    _log.info("slack: signed in as %s in team %s", identity.get("user"), identity.get("team"))


class HttpServer:
    """An aiohttp site on `host`:`port` passing POSTs to `path` to the bolt app (port 0 picks a free one)."""

    def __init__(self, app: AsyncApp, host: str, port: int, path: str = EVENTS_PATH) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._path = path
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        web_app = web.Application()
        web_app.router.add_post(self._path, self._dispatch)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        self._port = self._runner.addresses[0][1]
        _log.info("slack: HTTP mode listening on %s", self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}{self._path}"

    async def _dispatch(self, request: web.Request) -> web.Response:
        # Bolt parses a body before it checks the signature, and its check reads the timestamp with int(): a
        # request that is not Slack's (anyone may send one) would be answered 500 with a traceback in the log.
        try:
            int(request.headers.get("X-Slack-Request-Timestamp", "0"))
        except ValueError:
            return web.json_response({"error": "invalid request"}, status=401)
        try:
            bolt_request = await to_bolt_request(request)
            if not isinstance(bolt_request.body.get("event", {}), dict):  # bolt's middleware reads it as one
                raise TypeError("the event is not an object")
        except (ValueError, TypeError, AttributeError, LookupError, RecursionError) as e:  # bolt's parsing failing
            _log.info("slack: refused a request that is not one Slack sends (%s)", type(e).__name__)
            return web.json_response({"error": "invalid request"}, status=400)
        bolt_response = await self._app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)


@dataclass(frozen=True)
class RunningSlack:
    adapter: SlackAdapter
    url: str | None  # the events URL in HTTP mode, None in Socket Mode


@asynccontextmanager
async def start_slack(
    bot: MemoryBot, settings: SlackSettings, *, client: AsyncWebClient | None = None
) -> AsyncIterator[RunningSlack]:
    """Receive Slack events for `bot` until the block ends; then stop receiving and finish running work."""
    client = client or make_client(settings)
    state = PlatformState(bot.db.sql)
    secret = None if settings.socket_mode else settings.signing_secret.reveal()
    adapter = SlackAdapter(bot, client, state, signing_secret=secret)
    try:
        if settings.socket_mode:
            handler = AsyncSocketModeHandler(adapter.app, settings.app_token.reveal(), web_client=client)
            await handler.connect_async()
            _log.info("slack: connected in Socket Mode")
            try:
                yield RunningSlack(adapter, None)
            finally:
                await handler.close_async()
        else:
            async with HttpServer(adapter.app, settings.http_host, settings.http_port) as server:
                yield RunningSlack(adapter, server.url)
    finally:
        await adapter.close()


class SlackPlatform:
    """`memorybot slack` (see `adapters/platform.py`)."""

    name = "slack"
    help = "run the Slack app"
    interactive = False

    def __init__(self, settings: SlackSettings, client: AsyncWebClient | None = None) -> None:
        self.settings = settings
        self._client = client

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        pass

    @classmethod
    def from_env(cls, env_file: str | None, args: argparse.Namespace) -> SlackPlatform:
        return cls(load_group(SlackSettings, env_file))

    async def prepare(self) -> None:
        self._client = self._client or make_client(self.settings)
        await check_token(self._client)  # before loading the model: a bad token should fail fast

    async def serve(self, bot: MemoryBot, stop: asyncio.Event) -> None:
        async with start_slack(bot, self.settings, client=self._client):
            await stop.wait()
