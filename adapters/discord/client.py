"""The Discord client: gateway events in, `MemoryBot.handle` out, slash commands on a command tree.

`on_message` decides whether a message is meant for the bot, normalizes it and runs the core inside
the one error boundary of the event. A deleted message (by its author or a moderator, one or in bulk) is
forgotten: whatever the bot learned from it goes. An edited one is forgotten, then its new text is learned
(no new reply) if it is still for the bot. Discord rate limits are left to discord.py. An event that discord.py
cannot read (malformed) is dropped with a warning rather than ending the session.

The client is always discord.py's `AutoShardedClient`, so there is one code path: unsharded, it runs the
shards Discord recommends (one for a small bot) in this process; sharded, those of `shard_ids` out of
`shard_count`. Events reach the handlers below the same way whichever shard they come from. The process that
runs shard 0 (which also gets the DMs) registers the slash commands; the others leave them alone.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import discord
from discord import app_commands

from adapters.discord import commands
from adapters.discord.messages import is_addressed, message_ref, to_incoming
from adapters.discord.reply import DiscordReply, safe_mentions
from bot.app import MemoryBot
from bot.errors import REPLY_FAILED
from bot.message import IncomingMessage, MessageRef

_log = logging.getLogger(__name__)


def gateway_intents() -> discord.Intents:
    """Guild and DM messages with their text (message content is a privileged intent)."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = True
    return intents


# Without these the session cannot go on: failing to read them must end it, as discord.py does.
SESSION_EVENTS = frozenset({"READY", "RESUMED"})


def drop_unreadable_events(parsers: dict[str, Callable[[Any], None]]) -> None:
    """Make discord.py drop an event it cannot read (a field missing or of another type) instead of ending the
    session: its gateway loop lets a payload parser's exception end the connection, and the client with it, so one
    malformed event would stop the bot for every server. Only the exception's type and place are logged: its
    message may quote the payload, which is what users said."""
    for event, parse in parsers.items():
        if event not in SESSION_EVENTS:
            parsers[event] = _dropping(event, parse)


def _dropping(event: str, parse: Callable[[Any], None]) -> Callable[[Any], None]:
    def read(data: Any) -> None:
        try:
            parse(data)
        except Exception as exc:  # noqa: BLE001 - any payload discord.py cannot read is dropped, the session goes on
            where = traceback.extract_tb(exc.__traceback__)[-1]
            _log.warning("dropped a %s event discord.py could not read (%s at %s:%s)", event,
                         type(exc).__name__, Path(where.filename).name, where.lineno)
    return read


class DiscordClient(discord.AutoShardedClient):
    """Connects one `MemoryBot` to Discord (`shard_count` and `shard_ids`, if given, pick this process's shards)."""

    def __init__(
        self, bot: MemoryBot, *, respond_channels: frozenset[str] = frozenset(), **options: Any
    ) -> None:
        options.setdefault("intents", gateway_intents())
        options.setdefault("allowed_mentions", safe_mentions())
        super().__init__(**options)
        self.bot = bot
        self.respond_channels = respond_channels
        self.tree = app_commands.CommandTree(self)
        self._working: set[asyncio.Task[Any]] = set()  # event handlers running, for `finish_work`
        commands.install(self.tree, bot)
        drop_unreadable_events(self._connection.parsers)

    @contextmanager
    def _at_work(self) -> Iterator[None]:
        task = asyncio.current_task()
        if task is not None:
            self._working.add(task)
        try:
            yield
        finally:
            self._working.discard(task)  # type: ignore[arg-type]

    async def finish_work(self, timeout: float) -> None:
        """Give the events being handled (replies, forgetting) `timeout` seconds to finish (before closing)."""
        if running := {task for task in self._working if task is not asyncio.current_task()}:
            await asyncio.wait(running, timeout=timeout)

    @property
    def registers_commands(self) -> bool:
        """One process registers the slash commands (they are the application's, not a shard's): shard 0's."""
        return self.shard_ids is None or 0 in self.shard_ids

    async def setup_hook(self) -> None:
        if not self.registers_commands:
            return
        # Chat keeps working without slash commands, so a failed registration is a warning, not a crash.
        try:
            synced = await self.tree.sync()
        except discord.HTTPException as exc:
            _log.warning("could not register the slash commands (%s); chat still works", exc)
        else:
            _log.info("registered %d slash commands", len(synced))

    async def on_ready(self) -> None:
        _log.info("connected to Discord as %s (%s) in %d server(s), shard(s) %s of %s", self.user,
                  self.user and self.user.id, len(self.guilds), ", ".join(map(str, sorted(self.shards))),
                  self.shard_count)

    async def on_shard_ready(self, shard_id: int) -> None:
        _log.info("shard %d of %s connected", shard_id, self.shard_count)

    async def on_message(self, message: discord.Message) -> None:
        if self.user is None:
            return
        try:
            if not is_addressed(message, self.user, self.respond_channels):
                return
            incoming = to_incoming(message, self.user)
        except (AttributeError, TypeError, ValueError) as exc:  # discord.py does not check a payload's types
            _log.warning("ignored message %s: a field of it is malformed (%s)", message.id, type(exc).__name__)
            return
        with self._at_work():
            await self._answer(message, incoming)

    async def _answer(self, message: discord.Message, incoming: IncomingMessage) -> None:
        reply = DiscordReply(message)
        try:
            await self.bot.handle(incoming, reply)
        except discord.Forbidden as exc:
            _log.warning("no permission to answer in channel %s (guild %s): %s",
                         message.channel.id, incoming.workspace, exc.text)
        except Exception:  # noqa: BLE001 - the event's error boundary: log with context, tell the user
            _log.exception("failed to answer message %s in channel %s (guild %s)",
                           message.id, message.channel.id, incoming.workspace)
            await self._apologize(reply, message)

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        message, before = payload.message, payload.cached_message
        author = getattr(message, "author", None)  # absent from a malformed payload: then only forgetting follows
        if (author is not None and author.bot) or message.edited_at is None or (
                before is not None and before.content == message.content):
            return  # a bot's edit (the bot's own streaming), or an embed or a pin added: not new text
        with self._at_work():
            await self._relearn(message, message_ref(payload.guild_id, payload.message_id))

    async def _relearn(self, message: discord.Message, ref: MessageRef) -> None:
        try:
            incoming = to_incoming(message, self.user) if self.user is not None and is_addressed(
                message, self.user, self.respond_channels) else None
        except (AttributeError, TypeError, ValueError) as exc:  # a malformed payload: its new text is unknown
            _log.warning("edited message %s (guild %s) cannot be read (%s): forgetting what its old text taught",
                         ref.message_id, ref.workspace, type(exc).__name__)
            incoming = None
        try:
            if incoming is not None:
                await self.bot.message_edited(incoming, ref)
            else:  # not (or no longer) for the bot, or unreadable: only what it learned from the old text goes
                await self.bot.forget_message(ref)
        except Exception:  # noqa: BLE001 - the event's error boundary: ids only, nobody to tell
            _log.exception("could not relearn edited message %s (guild %s)", ref.message_id, ref.workspace)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self._forget(payload.guild_id, [payload.message_id])

    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await self._forget(payload.guild_id, sorted(payload.message_ids))

    async def _forget(self, guild_id: int | None, message_ids: list[int]) -> None:
        with self._at_work():
            for message_id in message_ids:
                try:
                    await self.bot.forget_message(message_ref(guild_id, message_id))
                except Exception:  # noqa: BLE001 - the event's error boundary: ids only, nobody to tell
                    _log.exception("could not forget deleted message %s (guild %s)", message_id, guild_id)

    async def _apologize(self, reply: DiscordReply, message: discord.Message) -> None:
        try:
            await reply.send(REPLY_FAILED)
        except discord.HTTPException as exc:
            _log.warning("could not send the apology for message %s: %s", message.id, exc)
