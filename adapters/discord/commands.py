"""Discord's face of the command table (`bot/commands`): one slash command per entry, answered ephemerally.

Each command defers first (the memory store may be busy for more than Discord's three seconds) and answers as
follow-ups; a `Confirm` becomes a message with a confirm and a cancel button, an `Attachment` a file.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable

import discord
from discord import app_commands

from adapters.discord.messages import DM_WORKSPACE, interaction_message
from adapters.discord.reply import MESSAGE_LIMIT, safe_mentions
from adapters.streaming import split_message
from bot.app import MemoryBot
from bot.commands import COMMANDS, Attachment, Command, Confirm, Dialect, Result
from bot.errors import COMMAND_FAILED
from bot.message import UserRef

_log = logging.getLogger(__name__)

CONFIRM_TIMEOUT = 120.0

Callback = Callable[..., Awaitable[None]]


def _usage(command: Command, value: str | None) -> str:
    arg = command.arg
    if arg is None:
        return f"/{command.name}"
    if value is None:
        return f"/{command.name} {arg.name}" if arg.required else f"/{command.name} [{arg.name}]"
    return f"/{command.name} {arg.name}:{value}"


def _scope(user: UserRef) -> str:
    """Memories belong to one server, or to the DMs."""
    return "in our direct messages" if user.workspace == DM_WORKSPACE else "in this server"


DISCORD = Dialect(
    code=lambda text: f"`{text}`", bold=lambda text: f"**{text}**", escape=discord.utils.escape_markdown,
    link=lambda url: f"[source](<{url}>)", date=lambda when: discord.utils.format_dt(when, "d"),
    usage=_usage, scope=_scope,
)


def install(tree: app_commands.CommandTree, bot: MemoryBot) -> None:
    """Add every command of the table, and the error handler, to `tree`."""
    for command in COMMANDS:
        tree.add_command(app_commands.Command(name=command.name, description=command.help[:100],
                                              callback=_callback(bot, command)))
    tree.error(on_command_error)


def _callback(bot: MemoryBot, command: Command) -> Callback:
    """A slash command callback whose one option (if any) is the command's argument, typed and described."""

    async def no_option(interaction: discord.Interaction) -> None:
        await run(bot, command, interaction, "")

    async def text(interaction: discord.Interaction, value: str) -> None:
        # a malformed interaction may carry a null (or non-string) value; the command table reads text
        await run(bot, command, interaction, "" if value is None else str(value))

    async def number(interaction: discord.Interaction, value: int | None = None) -> None:
        await run(bot, command, interaction, "" if value is None else str(value))

    if command.arg is None:
        return no_option
    callback = number if command.arg.kind is int else text
    return app_commands.describe(value=command.arg.help)(app_commands.rename(value=command.arg.name)(callback))


async def run(bot: MemoryBot, command: Command, interaction: discord.Interaction, arg: str) -> None:
    await interaction.response.defer(ephemeral=True, thinking=True)
    result = await bot.command(command.name, arg, interaction_message(interaction, arg), DISCORD)
    await render(bot, interaction, result)


async def render(bot: MemoryBot, interaction: discord.Interaction, result: Result) -> None:
    """Send a command's result as ephemeral follow-ups (a reply split at Discord's message limit)."""
    if isinstance(result, Confirm):
        view = ConfirmView(bot, result)
        view.message = await interaction.followup.send(result.question, view=view, ephemeral=True, wait=True)
    elif isinstance(result, Attachment):
        file = discord.File(io.BytesIO(result.content.encode()), filename=result.filename)
        await interaction.followup.send(result.text, file=file, ephemeral=True)
    else:
        for part in split_message(result.text, MESSAGE_LIMIT):
            await interaction.followup.send(part, ephemeral=True, allowed_mentions=safe_mentions())


async def on_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """Errors the command table never sees (Discord could not deliver an option, ...): logged, apologized for."""
    command = interaction.command.name if interaction.command else "?"
    _log.error("/%s failed for user %s", command, _user_id(interaction), exc_info=getattr(error, "original", error))
    await _tell(interaction, COMMAND_FAILED)


async def _tell(interaction: discord.Interaction, text: str) -> None:
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as exc:
        _log.warning("could not tell user %s about the failed command: %s", _user_id(interaction), exc)


def _user_id(interaction: discord.Interaction) -> int | str:
    """Who ran it, for the log; "?" for an interaction whose payload named no user (malformed)."""
    return getattr(interaction.user, "id", "?")


class ConfirmView(discord.ui.View):
    """The confirm and cancel buttons under a question; confirmed, the command runs again, `confirmed`."""

    def __init__(self, bot: MemoryBot, confirm: Confirm) -> None:
        super().__init__(timeout=CONFIRM_TIMEOUT)
        self._bot = bot
        self._confirm = confirm
        self.message: discord.WebhookMessage | None = None  # the question, to take the buttons away on timeout
        for label, style, callback in ((confirm.confirm_label, discord.ButtonStyle.danger, self._confirmed),
                                       ("Cancel", discord.ButtonStyle.secondary, self._cancelled)):
            button: discord.ui.Button[ConfirmView] = discord.ui.Button(label=label, style=style)
            button.callback = callback  # type: ignore[method-assign]
            self.add_item(button)

    async def _confirmed(self, interaction: discord.Interaction) -> None:
        self.stop()
        await interaction.response.defer()  # the command may take longer than Discord's three seconds
        msg = interaction_message(interaction, "")
        result = await self._bot.command(self._confirm.command, "", msg, DISCORD, confirmed=True)
        text = result.text if not isinstance(result, Confirm) else result.question
        await interaction.edit_original_response(content=text, view=None)

    async def _cancelled(self, interaction: discord.Interaction) -> None:
        self.stop()
        await interaction.response.edit_message(content=self._confirm.cancelled, view=None)

    async def on_timeout(self) -> None:
        if self.message is None:
            return
        try:
            await self.message.edit(content=self._confirm.timed_out, view=None)
        except discord.HTTPException as exc:
            _log.info("could not close a confirmation: %s", exc)

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item) -> None:
        _log.error("a confirmation failed for user %s", _user_id(interaction), exc_info=error)
        await _tell(interaction, COMMAND_FAILED)
