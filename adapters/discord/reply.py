"""`DiscordReply`: the core's `ReplyTarget` for one Discord message.

The first message of each answer replies to (references) the user's message; overflow parts follow as
plain channel messages. Streams are edited at most once a second and split at Discord's 2,000 characters.
Nothing the bot sends can ping @everyone, @here or a role; only the author may be mentioned. A call Discord answers
503 is tried again a few times (discord.py itself retries 429, 500, 502, 504 and 524), and a typing indicator Discord
refuses does not cost the reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiohttp
import discord

from adapters.streaming import EDIT_INTERVAL, render_stream, split_message

_log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000

UNKNOWN_MESSAGE = 10008  # the referenced message does not exist (any more)
INVALID_FORM_BODY = 50035  # what Discord answers for a reply to a deleted message
UNAVAILABLE_WAITS = (1.0, 2.0, 4.0)  # seconds before each new try of a call Discord answered 503

T = TypeVar("T")


def safe_mentions(author: discord.abc.Snowflake | None = None) -> discord.AllowedMentions:
    """Allow pinging at most the author (and the replied-to user), never everyone or roles."""
    return discord.AllowedMentions(
        everyone=False, roles=False, users=[author] if author else False, replied_user=True
    )


def is_missing_reference(exc: discord.HTTPException) -> bool:
    return isinstance(exc, discord.NotFound) or exc.code in (UNKNOWN_MESSAGE, INVALID_FORM_BODY)


class DiscordReply:
    """Answers in the channel (or thread) the user's message came from."""

    def __init__(
        self, source: discord.Message, *, limit: int = MESSAGE_LIMIT, interval: float = EDIT_INTERVAL
    ) -> None:
        self._source = source
        self._limit = limit
        self._interval = interval
        self._mentions = safe_mentions(source.author)

    async def send(self, text: str) -> None:
        for i, part in enumerate(split_message(text, self._limit)):
            await self._post(part, first=i == 0)

    async def stream(self, deltas: AsyncIterator[str]) -> str:
        sent = 0

        async def post(text: str) -> discord.Message:
            nonlocal sent
            sent += 1
            return await self._post(text, first=sent == 1)

        return await render_stream(deltas, post, self._edit, limit=self._limit, interval=self._interval)

    @asynccontextmanager
    async def typing(self) -> AsyncIterator[None]:
        """Discord's typing indicator while the reply is written, if Discord takes it (it is only a courtesy)."""
        indicator: Any = self._source.channel.typing()
        try:
            await indicator.__aenter__()
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            _log.info("typing indicator failed for message %s (%s); answering without it", self._source.id,
                      getattr(exc, "status", type(exc).__name__))
            indicator = None
        try:
            yield
        finally:
            if indicator is not None:
                await indicator.__aexit__(None, None, None)

    async def _post(self, text: str, *, first: bool) -> discord.Message:
        if first:
            try:
                return await _retry_unavailable(lambda: self._source.reply(text, allowed_mentions=self._mentions))
            except discord.HTTPException as exc:
                if not is_missing_reference(exc):
                    raise
                _log.info("message %s is gone (%s); answering without a reference", self._source.id, exc.code)
        return await _retry_unavailable(lambda: self._source.channel.send(text, allowed_mentions=self._mentions))

    async def _edit(self, sent: discord.Message, text: str) -> None:
        await _retry_unavailable(lambda: sent.edit(content=text, allowed_mentions=self._mentions))


async def _retry_unavailable(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, tried again after each of UNAVAILABLE_WAITS while Discord answers 503 Service Unavailable."""
    for wait in UNAVAILABLE_WAITS:
        try:
            return await call()
        except discord.DiscordServerError as exc:
            if exc.status != 503:
                raise
            _log.warning("Discord answered 503 Service Unavailable; trying again in %.0f s", wait)
            await asyncio.sleep(wait)
    return await call()
