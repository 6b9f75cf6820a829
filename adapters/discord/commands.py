"""Slash commands for a user's memories: /memories, /remember, /search, /forget, /forget-all, /export, /pause,
/resume, /why.

Each command maps onto one `MemoryOps` call; answers are ephemeral, so only the user sees them. Commands
defer first (the memory store may be busy for more than Discord's three seconds) and answer as follow-ups.
"""

from __future__ import annotations

import io
import json
import logging

import discord
from discord import app_commands

from adapters.discord.messages import interaction_message, interaction_user
from adapters.discord.reply import MESSAGE_LIMIT, safe_mentions
from adapters.streaming import split_message
from bot.errors import UserError
from bot.memories import MemoryOps, MemoryPage
from memory.records import MemoryRecord

_log = logging.getLogger(__name__)

COMMAND_FAILED = "Sorry, something went wrong with that command. Please try again later."
CONFIRM_TIMEOUT = 120.0
PAGE_SIZE = 10


def install(tree: app_commands.CommandTree, memories: MemoryOps) -> None:
    """Add the memory commands and their error handler to `tree`."""

    @tree.command(name="memories", description="What I remember about you")
    @app_commands.describe(page="Page number, starting at 1")
    async def list_memories(interaction: discord.Interaction, page: int = 1) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = interaction_user(interaction)
        found = await memories.list(user, page=page, page_size=PAGE_SIZE)
        await answer(interaction, format_page(found, paused=await memories.is_paused(user)))

    @tree.command(name="remember", description="Ask me to remember something about you")
    @app_commands.describe(text="What to remember")
    async def remember(interaction: discord.Interaction, text: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        record = await memories.remember(interaction_message(interaction, text), text)
        await answer(interaction, f"Got it, I'll remember: {record.text} (id `{record.id}`)")

    @tree.command(name="search", description="Search what I remember about you")
    @app_commands.describe(query="What to look for")
    async def search(interaction: discord.Interaction, query: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        found = await memories.search(interaction_message(interaction, query), query)
        lines = [format_record(i, record) for i, record in enumerate(found, start=1)]
        await answer(interaction, "\n".join(lines) or "Nothing I remember about you matches that.")

    @tree.command(name="why", description="Which memories my last reply to you used")
    async def why(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        used = memories.why(interaction_user(interaction))
        lines = [format_record(i, record) for i, record in enumerate(used, start=1)]
        text = "My last reply to you used:\n" + "\n".join(lines) if lines else "My last reply used no memories."
        await answer(interaction, text)

    @tree.command(name="forget", description="Forget one memory (ids are listed by /memories)")
    @app_commands.rename(memory_id="id")
    @app_commands.describe(memory_id="The memory id")
    async def forget(interaction: discord.Interaction, memory_id: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        if await memories.forget(interaction_user(interaction), memory_id):
            await answer(interaction, f"Forgotten: `{memory_id}`.")
        else:
            await answer(interaction, f"I have no memory `{memory_id}` about you. /memories lists the ids.")

    @tree.command(name="forget-all", description="Forget everything I know about you here (this server or DMs)")
    async def forget_all(interaction: discord.Interaction) -> None:
        view = ConfirmForgetAll(memories, interaction)
        await interaction.response.send_message(
            f"Forget **everything** I remember about you {_where(interaction)}? This cannot be undone.",
            view=view, ephemeral=True,
        )

    @tree.command(name="export", description="Download your memories as a JSON file")
    async def export(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = await memories.export(interaction_user(interaction))
        if not data["memories"]:
            await answer(interaction, "There is nothing to export: I don't remember anything about you yet.")
            return
        file = discord.File(io.BytesIO(json.dumps(data, indent=2).encode()), filename="memories.json")
        count = len(data.get("memories", []))
        await interaction.followup.send(f"Your memories ({count}).", file=file, ephemeral=True)

    @tree.command(name="pause", description="Stop learning about you (what I know stays)")
    async def pause(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await memories.pause(interaction_user(interaction))
        await answer(interaction, "Paused: I won't learn anything new about you. /resume turns it back on.")

    @tree.command(name="resume", description="Start learning about you again")
    async def resume(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await memories.resume(interaction_user(interaction))
        await answer(interaction, "Resumed: I'll remember what you tell me again.")

    tree.error(on_command_error)


def _where(interaction: discord.Interaction) -> str:
    """Memories belong to one server, or to the DMs: say which ones a command covers."""
    return "in our direct messages" if interaction.guild_id is None else "in this server"


async def answer(interaction: discord.Interaction, text: str) -> None:
    """Send `text` as ephemeral follow-ups, split at Discord's message limit."""
    for part in split_message(text, MESSAGE_LIMIT):
        await interaction.followup.send(part, ephemeral=True, allowed_mentions=safe_mentions())


async def on_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """The error boundary of every command: a `UserError` is shown as is, anything else is logged."""
    original = getattr(error, "original", error)
    if isinstance(original, UserError):
        text = str(original)
    else:
        command = interaction.command.name if interaction.command else "?"
        _log.error("/%s failed for user %s", command, interaction.user.id, exc_info=original)
        text = COMMAND_FAILED
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as exc:
        _log.warning("could not tell user %s about the failed command: %s", interaction.user.id, exc)


class ConfirmForgetAll(discord.ui.View):
    """The confirm and cancel buttons under /forget-all."""

    def __init__(self, memories: MemoryOps, prompt: discord.Interaction) -> None:
        super().__init__(timeout=CONFIRM_TIMEOUT)
        self._memories = memories
        self._prompt = prompt  # the /forget-all interaction, to take the buttons away on timeout

    @discord.ui.button(label="Forget everything", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        await interaction.response.defer()  # deleting may take longer than Discord's three seconds
        count = await self._memories.forget_all(interaction_user(interaction))
        noun = "memory" if count == 1 else "memories"
        done = f"Done: I forgot {count} {noun} about you."
        await interaction.edit_original_response(content=done, view=None)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        await interaction.response.edit_message(content="Cancelled: nothing was forgotten.", view=None)

    async def on_timeout(self) -> None:
        try:
            await self._prompt.edit_original_response(content="Timed out: nothing was forgotten.", view=None)
        except discord.HTTPException as exc:
            _log.info("could not close the /forget-all prompt: %s", exc)

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item
    ) -> None:
        _log.error("/forget-all confirmation failed for user %s", interaction.user.id, exc_info=error)
        try:
            await interaction.response.send_message(COMMAND_FAILED, ephemeral=True)
        except discord.HTTPException as exc:
            _log.warning("could not tell user %s about the failure: %s", interaction.user.id, exc)


def format_page(page: MemoryPage, *, paused: bool = False, page_size: int = PAGE_SIZE) -> str:
    """A numbered list: id, text, date and a link to where it was said."""
    if page.total == 0:
        lines = ["I don't remember anything about you yet."]
    else:
        lines = [f"**What I remember about you** (page {page.page} of {page.pages}, {page.total} in total)"]
        first = (page.page - 1) * page_size + 1
        lines += [format_record(first + i, record) for i, record in enumerate(page.records)]
        if page.page < page.pages:
            lines.append(f"More: `/memories page:{page.page + 1}`. Remove one with `/forget id`.")
    if paused:
        lines.append("Learning is paused for you; `/resume` turns it back on.")
    return "\n".join(lines)


def format_record(number: int, record: MemoryRecord) -> str:
    when = discord.utils.format_dt(record.created_at, "d") if record.created_at else "unknown date"
    link = f" · [source](<{record.source.link}>)" if record.source.link else ""
    return f"{number}. `{record.id}` {record.shown} · {when}{link}"
