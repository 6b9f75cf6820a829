"""The Slack app: bolt listeners that turn Slack events into `IncomingMessage`s for the core.

Listeners only translate. Bolt acknowledges Events API requests before a listener runs; the listener
starts the reply as a tracked task and returns. Answered: `app_mention` in channels, every message in a
DM, and follow-ups in threads the bot has posted in. Bot messages and message subtypes are ignored, and
an `event_id` already handled (a Slack retry) is never answered twice. Both facts are kept in the bot's state
database (SQLite, or PostgreSQL shared by every replica behind a load balancer: a retry reaching another replica is
not answered twice either).
A deleted message (`message_deleted`, or a thread's first message turned into a tombstone) is forgotten:
whatever the bot learned from it goes. An edited one (`message_changed` with new text) is forgotten, then its
new text is learned (no new reply) if it is still for the bot.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from adapters.platform import FINISH_SECONDS
from adapters.slack.commands import MemoryCommands
from adapters.slack.identity import PLATFORM, is_id, workspace_of
from adapters.slack.reply import CALL_FAILED, SlackReply, api_error
from bot.app import MemoryBot
from bot.errors import REPLY_FAILED
from bot.message import IncomingMessage, MessageRef
from bot.platform_state import PlatformState

_log = logging.getLogger(__name__)

# Subtypes that are still a person writing to the bot; every other subtype (edits, joins, ...) is ignored.
USER_SUBTYPES = frozenset({"file_share", "thread_broadcast"})
# a message's ts, "1710000000.000100": seconds since 1970 (at most 10 digits, so a datetime holds it), a sequence
SLACK_TS = re.compile(r"\d{1,10}(\.\d{1,9})?")

Payload = dict[str, Any]  # a Slack JSON object (request body, event)

def is_ts(value: object) -> bool:
    """A Slack message timestamp ("1710000000.000100"), which is also its id."""
    return isinstance(value, str) and SLACK_TS.fullmatch(value) is not None


def an_object(value: object) -> Payload:
    """`value` if it is a JSON object, else an empty one (a field Slack always sends as an object, sent otherwise)."""
    return value if isinstance(value, dict) else {}


def is_person_message(event: Payload) -> bool:
    """A message a person wrote (not a bot, not an edit, join, deletion, ...), with the fields Slack gives one and
    of their types: anything else is not Slack's and is ignored."""
    if event.get("bot_id") or event.get("bot_profile"):
        return False
    subtype = event.get("subtype")
    thread_ts = event.get("thread_ts")
    return ((subtype is None or (isinstance(subtype, str) and subtype in USER_SUBTYPES))
            and is_id(event.get("user")) and is_id(event.get("channel")) and is_ts(event.get("ts"))
            and isinstance(event.get("text", ""), str) and (thread_ts is None or is_ts(thread_ts)))


def deleted_ts(event: Payload) -> str | None:
    """The ts of the message a `message` event says was deleted, else None. A thread's first message, once
    deleted, stays as a tombstone: Slack reports that as a change, not a deletion."""
    ts = None
    if event.get("subtype") == "message_deleted":
        ts = event.get("deleted_ts")
    changed = an_object(event.get("message"))
    if event.get("subtype") == "message_changed" and changed.get("subtype") == "tombstone":
        ts = changed.get("ts")
    return ts if is_ts(ts) and is_id(event.get("channel")) else None


def strip_mention(text: str, bot_user_id: str | None) -> str:
    """Remove the bot's own `<@U…>` mention and undo Slack's escaping of `&`, `<`, `>`."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", "", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()


class WithoutRejectedBody(logging.Filter):
    """Bolt logs the whole body of a request it rejects (at INFO): what a user said, when Slack's request came
    late or the signing secret is wrong. The record stays, without the body."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Invalid request signature detected"):
            record.msg, record.args = "Invalid request signature or timestamp (the body is not logged)", None
        return True


def keep_rejected_bodies_out_of_the_log() -> None:
    logger = logging.getLogger("slack_bolt.RequestVerification")  # where bolt reports rejected requests
    if not any(isinstance(f, WithoutRejectedBody) for f in logger.filters):
        logger.addFilter(WithoutRejectedBody())


class SlackAdapter:
    """Owns the bolt `AsyncApp` and the tasks answering Slack; give it to `server` to receive events."""

    def __init__(
        self, bot: MemoryBot, client: AsyncWebClient, state: PlatformState, *, signing_secret: str | None
    ) -> None:
        self.bot = bot
        self.client = client
        self.state = state
        self._tasks: set[asyncio.Task[Any]] = set()
        self._names: dict[tuple[str, str], str] = {}
        self._team_url: str | None = None
        keep_rejected_bodies_out_of_the_log()
        self.app = AsyncApp(
            client=client,
            signing_secret=signing_secret or "",
            request_verification_enabled=signing_secret is not None,  # Socket Mode needs none
            logger=logging.getLogger("slack_bolt"),
        )
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        MemoryCommands(bot, self.spawn).register(self.app)

    # --- task tracking: ack first, work afterwards

    def spawn(self, work: Coroutine[Any, Any, Any], what: str) -> None:
        """Run `work` after the listener returns; failures are logged with `what` (the error boundary)."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._finished(t, what))

    def _finished(self, task: asyncio.Task[Any], what: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("slack: %s failed", what, exc_info=task.exception())

    async def drain(self) -> None:
        """Wait until every started reply and command has finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, timeout: float = FINISH_SECONDS) -> None:
        """Give running work `timeout` seconds, then cancel what is left."""
        try:
            await asyncio.wait_for(self.drain(), timeout)
        except TimeoutError:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- listeners

    async def _on_mention(self, body: Payload, event: Payload, context: AsyncBoltContext) -> None:
        if is_person_message(event):
            self.spawn(self._answer(body, event, context), f"app_mention {body.get('event_id')}")

    async def _on_message(self, body: Payload, event: Payload, context: AsyncBoltContext) -> None:
        if ts := deleted_ts(event):
            ref = MessageRef(PLATFORM, workspace_of(context), event["channel"], ts)
            self.spawn(self.bot.forget_message(ref), f"forgetting deleted message {ts} in {event['channel']}")
            return
        if event.get("subtype") == "message_changed":
            edited = {**an_object(event.get("message")), "channel": event.get("channel"),
                      "channel_type": event.get("channel_type")}
            before = an_object(event.get("previous_message"))
            if is_person_message(edited) and edited.get("text") != before.get("text"):  # not an unfurl
                self.spawn(self._relearn(edited, context), f"relearning edited message {edited.get('ts')}")
            return
        if not is_person_message(event):
            return
        if event.get("channel_type") == "im":
            self.spawn(self._answer(body, event, context), f"DM {body.get('event_id')}")
            return
        thread_ts = event.get("thread_ts")
        if thread_ts and not self._mentions_bot(event, context):  # a mention arrives as app_mention too
            self.spawn(self._follow_up(body, event, context, thread_ts), f"thread {body.get('event_id')}")

    @staticmethod
    def _mentions_bot(event: Payload, context: AsyncBoltContext) -> bool:
        return bool(context.bot_user_id) and f"<@{context.bot_user_id}" in event.get("text", "")

    async def _follow_up(
        self, body: Payload, event: Payload, context: AsyncBoltContext, thread_ts: str
    ) -> None:
        if await self.state.in_thread(event["channel"], thread_ts):
            await self._answer(body, event, context)

    async def _relearn(self, event: Payload, context: AsyncBoltContext) -> None:
        """An edited message: relearned if the bot answers such a message (a DM, a mention, a follow-up in
        one of its threads), else only forgotten."""
        workspace = workspace_of(context)
        thread_ts = event.get("thread_ts")
        for_bot = (event.get("channel_type") == "im" or self._mentions_bot(event, context)
                   or bool(thread_ts and thread_ts != event["ts"]
                           and await self.state.in_thread(event["channel"], thread_ts)))
        if for_bot:
            msg = await self.to_message(event, workspace, context.bot_user_id)
            await self.bot.message_edited(msg, msg.ref)
        else:
            await self.bot.forget_message(MessageRef(PLATFORM, workspace, event["channel"], event["ts"]))

    async def _answer(self, body: Payload, event: Payload, context: AsyncBoltContext) -> None:
        event_id = body.get("event_id")
        try:
            first = not is_id(event_id) or await self.state.first_delivery(event_id)
        except Exception:  # the state database is down: answering, or apologizing, beats silence
            _log.exception("slack: could not check whether event %s is a retry; answering it", event_id)
            first = True
        if not first:
            _log.info("slack: ignoring retry of event %s", event_id)
            return
        msg = await self.to_message(event, workspace_of(context), context.bot_user_id)
        reply = SlackReply(self.client, msg.channel_id, msg.thread_id, on_post=self.state.add_thread)
        try:
            await self.bot.handle(msg, reply)
        except Exception:  # the error boundary for one event: log with context, tell the user
            _log.exception("slack: answering %s in %s (event %s) failed", msg.message_id, msg.channel_id,
                           event_id)
            await reply.send(REPLY_FAILED)

    # --- translation

    async def to_message(
        self, event: Payload, workspace: str, bot_user_id: str | None
    ) -> IncomingMessage:
        channel, ts, user = event["channel"], event["ts"], event["user"]
        direct = event.get("channel_type") == "im"
        # In channels the bot always answers in a thread; in a DM only when the user wrote in one.
        thread_ts = event.get("thread_ts") or (None if direct else ts)
        edited = an_object(event.get("edited")).get("ts")
        return IncomingMessage(
            platform=PLATFORM,
            workspace=workspace,
            channel_id=channel,
            user_id=user,
            user_name=await self._user_name(workspace, user),
            text=strip_mention(event.get("text", ""), bot_user_id),
            message_id=ts,
            thread_id=thread_ts,
            link=await self._permalink(channel, ts, event.get("thread_ts")),
            sent_at=datetime.fromtimestamp(float(ts), tz=UTC),
            is_direct=direct,
            edited_at=datetime.fromtimestamp(float(edited), tz=UTC) if is_ts(edited) else None,
        )

    async def _user_name(self, workspace: str, user: str) -> str:
        key = (workspace, user)
        if key not in self._names:
            try:
                info = (await self.client.users_info(user=user))["user"]
            except CALL_FAILED as e:
                _log.warning("slack: users.info for %s failed: %s", user, api_error(e))
                return user
            display = (info.get("profile") or {}).get("display_name")
            self._names[key] = display or info.get("real_name") or info.get("name") or user
        return self._names[key]

    async def _permalink(self, channel: str, ts: str, thread_ts: str | None) -> str | None:
        try:
            return (await self.client.chat_getPermalink(channel=channel, message_ts=ts))["permalink"]
        except CALL_FAILED as e:
            _log.warning("slack: chat.getPermalink failed (%s); building the link", api_error(e))
        if self._team_url is None:
            try:
                self._team_url = (await self.client.auth_test())["url"]
            except CALL_FAILED as e:
                _log.warning("slack: auth.test failed: %s", api_error(e))
                return None
        link = f"{self._team_url.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"
        if thread_ts and thread_ts != ts:
            link += f"?thread_ts={thread_ts}&cid={channel}"
        return link
