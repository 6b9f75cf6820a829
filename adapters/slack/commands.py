"""`/memory` and the App Home tab: Slack's faces of the core's memory operations.

Every answer is ephemeral (`respond` to the command's response_url). `forget all` asks for a confirming
button first. `export` sends a JSON file to the user's DM with the bot (`files_upload_v2`), so a memory
dump never lands in a shared channel. The Home tab lists what the bot remembers about the viewer, with a
Forget button per memory. Listeners ack at once and do the work in a task.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.reply import api_error, escape
from bot.app import MemoryBot
from bot.errors import UserError
from bot.message import IncomingMessage, UserRef
from memory.records import MemoryRecord

_log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any], str], None]

PAGE_SIZE = 10
HOME_LIMIT = 40  # a view holds at most 100 blocks; one per memory plus a few headers
CONFIRM_FORGET_ALL = "memory_forget_all_confirm"
CANCEL_FORGET_ALL = "memory_forget_all_cancel"
HOME_FORGET = "home_forget"  # action ids are "home_forget:<memory id>" (unique within the view)

HELP = """*`/memory` commands*
• `/memory list [page]`: what I remember about you
• `/memory remember <text>`: remember something
• `/memory search <words>`: search your memories
• `/memory why`: which memories my last reply to you used
• `/memory forget <id>`: forget one memory (ids are in the list)
• `/memory forget all`: forget everything about you
• `/memory export`: send you all your memories as a JSON file
• `/memory pause` / `/memory resume`: stop or restart learning from your messages"""
FAILED = "Sorry, something went wrong on my side. Please try again."


def _slack_user(context: AsyncBoltContext, user_id: str) -> UserRef:
    return UserRef("slack", context.team_id or context.enterprise_id or "unknown", user_id)


def _line(record: MemoryRecord) -> str:
    when = record.created_at.date().isoformat() if record.created_at else "?"
    link = record.source.link
    where = f" · <{link}|source>" if link and link.startswith("https://") else ""
    return f"`{record.id}` {escape(record.shown)} _({when}{where})_"


class MemoryCommands:
    """The `/memory` command, its buttons and the Home tab, registered on a bolt app by `register`."""

    def __init__(self, bot: MemoryBot, spawn: Spawn) -> None:
        self._bot = bot
        self._spawn = spawn

    def register(self, app: AsyncApp) -> None:
        app.command("/memory")(self._on_command)
        app.action(CONFIRM_FORGET_ALL)(self._on_forget_all)
        app.action(CANCEL_FORGET_ALL)(self._on_cancel)
        app.action(re.compile(rf"^{HOME_FORGET}:"))(self._on_home_forget)
        app.event("app_home_opened")(self._on_home_opened)

    # --- /memory

    async def _on_command(
        self, ack: Any, command: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext,
        client: AsyncWebClient,
    ) -> None:
        await ack()
        verb = (command.get("text") or "").strip().split(" ", 1)[0].lower()
        self._spawn(self._run(command, respond, context, client), f"/memory {verb}")

    async def _run(
        self, command: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext,
        client: AsyncWebClient,
    ) -> None:
        verb, _, rest = (command.get("text") or "").strip().partition(" ")
        verb, rest = verb.lower(), rest.strip()
        user = _slack_user(context, command["user_id"])
        try:
            text = await self._dispatch(verb, rest, user, command, client)
        except UserError as e:
            text = str(e)
        except Exception:  # the error boundary for one command
            _log.exception("slack: /memory %s for %s failed", verb, user.key)
            text = FAILED
        if isinstance(text, dict):
            await respond(response_type="ephemeral", **text)
        else:
            await respond(text=text, response_type="ephemeral")

    async def _dispatch(
        self, verb: str, rest: str, user: UserRef, command: dict[str, Any], client: AsyncWebClient
    ) -> str | dict[str, Any]:
        memories = self._bot.memories
        if verb == "list":
            if rest and not rest.isdigit():
                raise UserError("Use `/memory list` or `/memory list <page number>`.")
            return await self._list(user, int(rest or 1))
        if verb == "remember":
            record = await memories.remember(self._command_message(command, user, rest), rest)
            return f"I'll remember that: {escape(record.text)} (id `{record.id}`)"
        if verb == "search":
            found = await memories.search(self._command_message(command, user, rest), rest)
            return "\n".join(f"• {_line(r)}" for r in found) or "Nothing I remember about you matches that."
        if verb == "why":
            used = memories.why(user)
            if not used:
                return "My last reply to you used no memories."
            return "My last reply to you used:\n" + "\n".join(f"• {_line(r)}" for r in used)
        if verb == "forget" and rest.lower() == "all":
            return await self._confirm_forget_all(user)
        if verb == "forget":
            if await memories.forget(user, rest):
                return f"Forgot memory `{escape(rest)}`."
            return f"I have no memory `{escape(rest)}` of yours. `/memory list` shows the ids."
        if verb == "export":
            return await self._export(user, client)
        if verb == "pause":
            await memories.pause(user)
            return "Paused: I won't learn anything new from your messages until `/memory resume`."
        if verb == "resume":
            await memories.resume(user)
            return "Resumed: I'll learn from your messages again."
        return HELP

    async def _list(self, user: UserRef, page: int) -> str:
        # Ephemeral: only the user sees the list, so it includes what they told the bot in DMs.
        result = await self._bot.memories.list(user, page=page, page_size=PAGE_SIZE)
        if not result.total:
            return "I don't remember anything about you yet."
        lines = [f"*What I remember about you* (page {result.page} of {result.pages}, {result.total} in all)"]
        lines += [f"• {_line(r)}" for r in result.records]
        if result.page < result.pages:
            lines.append(f"More: `/memory list {result.page + 1}`")
        lines.append("Forget one with `/memory forget <id>`.")
        return "\n".join(lines)

    def _command_message(self, command: dict[str, Any], user: UserRef, text: str) -> IncomingMessage:
        """A slash command as a message, for access checks and `remember` (it has no ts and no permalink)."""
        channel = str(command.get("channel_id", ""))
        return IncomingMessage(
            platform="slack", workspace=user.workspace, channel_id=channel, user_id=user.user_id,
            user_name=str(command.get("user_name", user.user_id)), text=text, message_id="",
            sent_at=datetime.now(UTC), is_direct=channel.startswith("D"),
        )

    async def _export(self, user: UserRef, client: AsyncWebClient) -> str:
        data = await self._bot.memories.export(user)
        try:
            dm = (await client.conversations_open(users=user.user_id))["channel"]["id"]
            await client.files_upload_v2(
                channel=dm, content=json.dumps(data, indent=2, ensure_ascii=False),
                filename="memorybot-memories.json", title="Your memories",
                initial_comment="Everything I remember about you, as JSON.",
            )
        except SlackApiError as e:
            _log.warning("slack: export for %s failed: %s", user.key, api_error(e))
            return "Sorry, I couldn't send you the export file. Please try again later."
        return f"I sent you {len(data.get('memories', []))} memories as a JSON file in our direct messages."

    # --- forget all, with a confirming button

    async def _confirm_forget_all(self, user: UserRef) -> str | dict[str, Any]:
        total = (await self._bot.memories.list(user, page=1, page_size=1)).total
        if not total:
            return "I don't remember anything about you, so there is nothing to forget."
        question = f"Forget *all {total}* memories I have about you? This cannot be undone."
        return {
            "text": question,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": question}},
                {"type": "actions", "elements": [
                    {"type": "button", "action_id": CONFIRM_FORGET_ALL, "style": "danger", "value": "all",
                     "text": {"type": "plain_text", "text": "Forget everything"}},
                    {"type": "button", "action_id": CANCEL_FORGET_ALL, "value": "cancel",
                     "text": {"type": "plain_text", "text": "Cancel"}},
                ]},
            ],
        }

    async def _on_forget_all(
        self, ack: Any, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
    ) -> None:
        await ack()
        user = _slack_user(context, body["user"]["id"])
        self._spawn(self._forget_all(user, respond), "forget all")

    async def _forget_all(self, user: UserRef, respond: AsyncRespond) -> None:
        count = await self._bot.memories.forget_all(user)
        await respond(text=f"Done: I forgot all {count} memories about you.", replace_original=True)

    async def _on_cancel(self, ack: Any, respond: AsyncRespond) -> None:
        await ack()
        self._spawn(respond(text="OK, I forgot nothing.", replace_original=True), "cancel forget all")

    # --- App Home

    async def _on_home_opened(
        self, event: dict[str, Any], context: AsyncBoltContext, client: AsyncWebClient
    ) -> None:
        if event.get("tab", "home") == "home":
            user = _slack_user(context, event["user"])
            self._spawn(self.publish_home(user, client), f"home for {user.key}")

    async def _on_home_forget(
        self, ack: Any, body: dict[str, Any], action: dict[str, Any], context: AsyncBoltContext,
        client: AsyncWebClient,
    ) -> None:
        await ack()
        user = _slack_user(context, body["user"]["id"])
        self._spawn(self._home_forget(user, action["value"], client), f"home forget for {user.key}")

    async def _home_forget(self, user: UserRef, memory_id: str, client: AsyncWebClient) -> None:
        await self._bot.memories.forget(user, memory_id)  # already gone: the refreshed view shows it
        await self.publish_home(user, client)

    async def publish_home(self, user: UserRef, client: AsyncWebClient) -> None:
        view = {"type": "home", "blocks": await self._home_blocks(user)}
        try:
            await client.views_publish(user_id=user.user_id, view=view)
        except SlackApiError as e:
            _log.warning("slack: views.publish for %s failed: %s", user.key, api_error(e))

    async def _home_blocks(self, user: UserRef) -> list[dict[str, Any]]:
        memories = self._bot.memories
        result = await memories.list(user, page=1, page_size=HOME_LIMIT)
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": "What I remember about you"}},
        ]
        if await memories.is_paused(user):
            blocks.append(_context("Learning is paused for you. `/memory resume` turns it back on."))
        if not result.total:
            blocks.append(_context("Nothing yet. Talk to me, or use `/memory remember <text>`."))
        for record in result.records:
            blocks.append({
                "type": "section",
                "text": {"type": "mrkdwn", "text": _line(record)[:2900]},
                "accessory": {"type": "button", "action_id": f"{HOME_FORGET}:{record.id}", "value": record.id,
                              "text": {"type": "plain_text", "text": "Forget"}},
            })
        if result.total > len(result.records):
            shown = f"Showing {len(result.records)} of {result.total}. `/memory list` shows all."
            blocks.append(_context(shown))
        blocks.append(_context("`/memory` lists the commands: export, forget all, pause and more."))
        return blocks


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}
