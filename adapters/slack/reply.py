"""Answering in one Slack conversation: the `ReplyTarget` for a channel thread or a DM.

Model text is escaped (`&`, `<`, `>`) so it can never become `<!channel>`, `<!here>` or a user ping.
Streaming posts a first part with `chat.postMessage` and `chat.update`s it about once a second; long
replies continue in further messages under Slack's 4,000 characters. Web API errors are logged, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.streaming import EDIT_INTERVAL, render_stream, split_message

_log = logging.getLogger(__name__)

# What a Web API call may fail with besides Slack's own errors: the network, a timeout.
CALL_FAILED = (SlackApiError, aiohttp.ClientError, TimeoutError)
LIMIT = 3900  # Slack truncates/rejects text above 4,000 characters; keep a margin


def escape(text: str) -> str:
    """Make text literal in Slack: no links, mentions or special commands can come out of it."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def api_error(e: Exception) -> str:
    """The Slack error code of a failed call (`ratelimited`, `not_in_channel`, ...), its HTTP status, or
    what went wrong on the way (a network error, a timeout)."""
    if not isinstance(e, SlackApiError):
        return f"{type(e).__name__}: {e}"
    data = e.response.data
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return f"HTTP {e.response.status_code}"


class SlackReply:
    """Replies in `channel`, inside `thread_ts` when given; `on_post` hears each thread the bot posts in."""

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str | None,
        on_post: Callable[[str, str], Awaitable[None]] | None = None,
        interval: float = EDIT_INTERVAL,
    ) -> None:
        self._client = client
        self._channel = channel
        self._thread_ts = thread_ts
        self._on_post = on_post
        self._interval = interval

    async def send(self, text: str) -> None:
        for part in split_message(escape(text), LIMIT):
            await self._post(part)

    async def stream(self, deltas: AsyncIterator[str]) -> str:
        raw: list[str] = []

        async def escaped() -> AsyncIterator[str]:
            async for delta in deltas:
                raw.append(delta)
                yield escape(delta)

        await render_stream(escaped(), self._post, self._edit, limit=LIMIT, interval=self._interval)
        return "".join(raw)

    def typing(self) -> AbstractAsyncContextManager[None]:
        return nullcontext()  # Slack has no typing indicator for bots

    async def _post(self, text: str) -> str | None:
        """Post one message; return its ts, or None when Slack refused it (already logged)."""
        try:
            response = await self._client.chat_postMessage(
                channel=self._channel, thread_ts=self._thread_ts, text=text
            )
        except SlackApiError as e:
            _log.warning("chat.postMessage to %s failed: %s", self._channel, api_error(e))
            return None
        if self._thread_ts and self._on_post is not None:
            await self._on_post(self._channel, self._thread_ts)
        return response.get("ts")

    async def _edit(self, ts: str | None, text: str) -> None:
        if ts is None:  # the first post failed; there is nothing to edit
            return
        try:
            await self._client.chat_update(channel=self._channel, ts=ts, text=text)
        except SlackApiError as e:
            # A skipped edit is made good by the next one; the final edit is never throttled.
            _log.warning("chat.update in %s failed: %s", self._channel, api_error(e))
