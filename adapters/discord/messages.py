"""Translating Discord messages for the core: is a message meant for the bot, and its normalized form.

Identity: workspace is the guild id (or "dm"). In a thread, `channel_id` is the thread's parent channel
(so channel allow/block lists cover its threads) and `thread_id` the thread; the link points at the thread.
"""

from __future__ import annotations

import discord

from bot.message import IncomingMessage, MessageRef

PLATFORM = "discord"
DM_WORKSPACE = "dm"
CHAT_TYPES = (discord.MessageType.default, discord.MessageType.reply)  # not joins, pins, thread starts...


def workspace_of(guild_id: int | None) -> str:
    """A server's memories are its own; all DMs with the bot share one workspace."""
    return str(guild_id) if guild_id else DM_WORKSPACE


def message_link(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def is_ignored(message: discord.Message, me: discord.abc.User) -> bool:
    """Other bots, webhooks and the bot itself never get an answer (no bot-to-bot loops); neither do
    system messages, nor a message without an author (discord.py leaves it out when the payload has none)."""
    author = getattr(message, "author", None)
    if author is None:
        return True
    from_a_bot = author.id == me.id or author.bot or message.webhook_id is not None
    return from_a_bot or message.type not in CHAT_TYPES


def mentions_me(message: discord.Message, me: discord.abc.User) -> bool:
    """An @mention of the bot, or of its own role (Discord offers both when typing @memorybot);
    @everyone and @here do not count."""
    own_role = message.guild.self_role if message.guild else None
    return any(user.id == me.id for user in message.mentions) or (
        own_role is not None and any(role.id == own_role.id for role in message.role_mentions)
    )


def replies_to_me(message: discord.Message, me: discord.abc.User) -> bool:
    resolved = message.reference.resolved if message.reference else None
    return isinstance(resolved, discord.Message) and resolved.author.id == me.id


def is_addressed(message: discord.Message, me: discord.abc.User, respond_channels: frozenset[str]) -> bool:
    """DMs always; in a server a mention, a reply to one of the bot's messages, or a listed channel
    (threads of a listed channel included)."""
    if is_ignored(message, me):
        return False
    if message.guild is None:
        return True
    if mentions_me(message, me) or replies_to_me(message, me):
        return True
    channel = message.channel
    listed = {str(channel.id), str(getattr(channel, "parent_id", None))} & respond_channels
    # in a listed channel a post with no text (an image, a sticker) is for the people there, not the bot
    return bool(listed) and bool(message.content.strip())


def clean_text(message: discord.Message, me: discord.abc.User) -> str:
    """The message text without the bot's own mention; other mentions become readable @names."""
    text = message.content
    own_role = message.guild.self_role if message.guild else None
    for form in (f"<@{me.id}>", f"<@!{me.id}>", *([f"<@&{own_role.id}>"] if own_role else [])):
        text = text.replace(form, "")
    for user in message.mentions:
        for form in (f"<@{user.id}>", f"<@!{user.id}>"):
            text = text.replace(form, f"@{user.display_name}")
    return text.strip()


def to_incoming(message: discord.Message, me: discord.abc.User) -> IncomingMessage:
    channel = message.channel
    guild_id = message.guild.id if message.guild else None
    in_thread = isinstance(channel, discord.Thread)
    author = message.author
    roles = getattr(author, "roles", [])
    return IncomingMessage(
        platform=PLATFORM,
        workspace=workspace_of(guild_id),
        channel_id=str(channel.parent_id if in_thread else channel.id),  # type: ignore[union-attr]
        user_id=str(author.id),
        user_name=author.display_name,
        text=clean_text(message, me),
        message_id=str(message.id),
        thread_id=str(channel.id) if in_thread else None,
        link=message_link(guild_id, channel.id, message.id),
        sent_at=message.created_at,
        is_direct=guild_id is None,
        roles=tuple(str(role.id) for role in roles if not role.is_default()),
        edited_at=message.edited_at,
    )


def message_ref(guild_id: int | None, message_id: int) -> MessageRef:
    """A deleted or edited message, for the core. Message ids are unique across Discord, and a delete event
    names the thread where `to_incoming` named its parent channel, so the channel is left out."""
    return MessageRef(PLATFORM, workspace_of(guild_id), None, str(message_id))


def interaction_message(interaction: discord.Interaction, text: str) -> IncomingMessage:
    """A slash command as a message (for access checks and `/remember`); it has no message of its own, so
    the link points at the channel. In a thread, as for messages, the channel is the thread's parent."""
    channel = interaction.channel
    in_thread = isinstance(channel, discord.Thread)
    channel_id = (channel.parent_id if in_thread else interaction.channel_id) or 0  # type: ignore[union-attr]
    roles = getattr(interaction.user, "roles", [])
    return IncomingMessage(
        platform=PLATFORM,
        workspace=workspace_of(interaction.guild_id),
        channel_id=str(channel_id),
        user_id=str(interaction.user.id),
        user_name=interaction.user.display_name,
        text=text,
        message_id=str(interaction.id),
        thread_id=str(interaction.channel_id) if in_thread else None,
        link=f"https://discord.com/channels/{interaction.guild_id or '@me'}/{interaction.channel_id or 0}",
        sent_at=interaction.created_at,
        is_direct=interaction.guild_id is None,
        roles=tuple(str(role.id) for role in roles if not role.is_default()),
    )
