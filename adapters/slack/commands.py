"""Slack's face of the command table (`bot/commands`): `/memory <words>`, its buttons and the App Home tab.

Every answer is ephemeral (`respond` to the command's response_url). A `Confirm` becomes a question with a
confirm and a cancel button; an `Attachment` is sent as a file to the user's DM with the bot
(`files_upload_v2`), so a memory dump never lands in a shared channel. The Home tab lists what the bot
remembers about the viewer, with a Forget button per memory. Listeners ack at once and do the work in a task.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.identity import command_message, is_id, user_ref
from adapters.slack.reply import CALL_FAILED, LIMIT, api_error, escape
from adapters.streaming import split_message
from bot.app import MemoryBot
from bot.commands import Attachment, Command, Confirm, Dialect, command_named, parse_words, record_line
from bot.message import UserRef

_log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any], str], None]
Payload = dict[str, Any]

HOME_LIMIT = 40  # a view holds at most 100 blocks; one per memory plus a few headers
CONFIRM = "memory_confirm"  # the button's value is the command to run again, confirmed
CANCEL = "memory_cancel"  # the button's value is what to say instead
HOME_FORGET = "home_forget"  # action ids are "home_forget:<memory id>" (unique within the view)
EXPORT_FAILED = "Sorry, I couldn't send you the file. Please try again later."


def _usage(command: Command, value: str | None) -> str:
    if value is None and command.arg is not None:
        value = f"<{command.arg.name}>" if command.arg.required else f"[{command.arg.name}]"
    return f"/memory {command.words}" + (f" {value}" if value else "")


def _link(url: str) -> str:
    return f"<{url}|source>" if url.startswith("https://") else ""


SLACK = Dialect(
    code=lambda text: f"`{text}`", bold=lambda text: f"*{text}*", escape=escape, link=_link,
    date=lambda when: when.date().isoformat(), usage=_usage, scope=lambda user: "in this workspace",
)


class MemoryCommands:
    """The `/memory` command, its buttons and the Home tab, registered on a bolt app by `register`."""

    def __init__(self, bot: MemoryBot, spawn: Spawn) -> None:
        self._bot = bot
        self._spawn = spawn

    def register(self, app: AsyncApp) -> None:
        app.command("/memory")(self._on_command)
        app.action(CONFIRM)(self._on_confirm)
        app.action(CANCEL)(self._on_cancel)
        app.action(re.compile(rf"^{HOME_FORGET}:"))(self._on_home_forget)
        app.event("app_home_opened")(self._on_home_opened)

    # --- /memory

    async def _on_command(self, ack: Any, command: Payload, respond: AsyncRespond, context: AsyncBoltContext,
                          client: AsyncWebClient) -> None:
        await ack()
        if not is_id(command.get("user_id")) or not command.get("response_url"):  # Slack always sends both
            _log.info("slack: ignoring a /memory command without a user or a response_url")
            return
        found, arg = parse_words(command.get("text") or "")
        name = found.name if found else (arg.split(" ", 1)[0] or "help")
        msg = command_message(context, command["user_id"], str(command.get("user_name", command["user_id"])),
                              str(command.get("channel_id", "")), arg)
        self._spawn(self._run(name, arg if found else "", msg, respond, client), f"/memory {name}")

    async def _run(self, name: str, arg: str, msg: Any, respond: AsyncRespond, client: AsyncWebClient) -> None:
        result = await self._bot.command(name, arg, msg, SLACK)
        if isinstance(result, Confirm):
            await respond(response_type="ephemeral", text=result.question, blocks=_question(result))
        elif isinstance(result, Attachment):
            await respond(response_type="ephemeral", text=await self._send_file(msg.user, result, client))
        else:
            for part in split_message(result.text, LIMIT):
                await respond(response_type="ephemeral", text=part)

    async def _send_file(self, user: UserRef, file: Attachment, client: AsyncWebClient) -> str:
        try:
            dm = (await client.conversations_open(users=user.user_id))["channel"]["id"]
            await client.files_upload_v2(channel=dm, content=file.content, filename=file.filename,
                                         title=file.filename, initial_comment=file.text)
        except CALL_FAILED as e:
            _log.warning("slack: sending a file to %s failed: %s", user.key, api_error(e))
            return EXPORT_FAILED
        return "I sent you the file in our direct messages."

    # --- the buttons under a question

    async def _on_confirm(self, ack: Any, body: Payload, action: Payload, respond: AsyncRespond,
                          context: AsyncBoltContext) -> None:
        await ack()
        user_id = body["user"]["id"]
        channel = str((body.get("channel") or {}).get("id", ""))
        msg = command_message(context, user_id, str(body["user"].get("name", user_id)), channel, "")
        self._spawn(self._confirmed(action["value"], msg, respond), f"confirmed {action['value']}")

    async def _confirmed(self, name: str, msg: Any, respond: AsyncRespond) -> None:
        result = await self._bot.command(name, "", msg, SLACK, confirmed=True)
        text = result.question if isinstance(result, Confirm) else result.text
        await respond(text=text, replace_original=True)

    async def _on_cancel(self, ack: Any, action: Payload, respond: AsyncRespond) -> None:
        await ack()
        # the value is the text our question gave the button; escaped all the same, as everything sent is
        self._spawn(respond(text=escape(action["value"]), replace_original=True), "cancelled a confirmation")

    # --- App Home

    async def _on_home_opened(self, event: Payload, context: AsyncBoltContext, client: AsyncWebClient) -> None:
        if event.get("tab", "home") == "home" and is_id(event.get("user")):
            user = user_ref(context, event["user"])
            self._spawn(self.publish_home(user, client), f"home for {user.key}")

    async def _on_home_forget(self, ack: Any, body: Payload, action: Payload, context: AsyncBoltContext,
                              client: AsyncWebClient) -> None:
        await ack()
        user = user_ref(context, body["user"]["id"])
        self._spawn(self._home_forget(user, action["value"], client), f"home forget for {user.key}")

    async def _home_forget(self, user: UserRef, memory_id: str, client: AsyncWebClient) -> None:
        await self._bot.memories.forgetting.forget(user, memory_id)  # already gone: the refreshed view shows it
        await self.publish_home(user, client)

    async def publish_home(self, user: UserRef, client: AsyncWebClient) -> None:
        view = {"type": "home", "blocks": await self._home_blocks(user)}
        try:
            await client.views_publish(user_id=user.user_id, view=view)
        except SlackApiError as e:
            _log.warning("slack: views.publish for %s failed: %s", user.key, api_error(e))

    async def _home_blocks(self, user: UserRef) -> list[Payload]:
        controls = self._bot.memories.controls
        result = await controls.list(user, page=1, page_size=HOME_LIMIT)
        blocks: list[Payload] = [
            {"type": "header", "text": {"type": "plain_text", "text": "What I remember about you"}},
        ]
        if await controls.is_paused(user):
            blocks.append(_context(f"Learning is paused for you; {_usage_of('resume')} turns it back on."))
        if not result.total:
            blocks.append(_context(f"Nothing yet. Talk to me, or use {_usage_of('remember')}."))
        for record in result.records:
            blocks.append({
                "type": "section",
                "text": {"type": "mrkdwn", "text": record_line(record, SLACK)[:2900]},
                "accessory": {"type": "button", "action_id": f"{HOME_FORGET}:{record.id}", "value": record.id,
                              "text": {"type": "plain_text", "text": "Forget"}},
            })
        if result.total > len(result.records):
            shown = f"Showing {len(result.records)} of {result.total}. {_usage_of('memories')} shows all."
            blocks.append(_context(shown))
        blocks.append(_context(f"{_usage_of('help')} lists the commands: export, forget all, pause and more."))
        return blocks


def _usage_of(name: str) -> str:
    return SLACK.code(SLACK.usage(command_named(name), None))


def _question(confirm: Confirm) -> list[Payload]:
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": confirm.question}},
        {"type": "actions", "elements": [
            {"type": "button", "action_id": CONFIRM, "style": "danger", "value": confirm.command,
             "text": {"type": "plain_text", "text": confirm.confirm_label}},
            {"type": "button", "action_id": CANCEL, "value": confirm.cancelled,
             "text": {"type": "plain_text", "text": "Cancel"}},
        ]},
    ]


def _context(text: str) -> Payload:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}
