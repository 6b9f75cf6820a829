"""The boundary between adapters and the core: one normalized incoming message and a reply target.

An adapter turns a platform event into an `IncomingMessage` and implements `ReplyTarget` for the
conversation it came from. The core never sees a platform object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol


@dataclass(frozen=True)
class UserRef:
    """Who a memory belongs to: platform + workspace + user id. The same id elsewhere is someone else."""

    platform: str
    workspace: str
    user_id: str

    @property
    def key(self) -> str:
        """The stable string used as the memory store's user id."""
        return f"{self.platform}:{self.workspace}:{self.user_id}"

    @classmethod
    def from_key(cls, key: str) -> UserRef:
        """The reference a `key` was made from (ids may not contain ":", workspaces may)."""
        platform, _, rest = key.partition(":")
        workspace, _, user_id = rest.rpartition(":")
        return cls(platform, workspace, user_id)


@dataclass(frozen=True)
class IncomingMessage:
    """One message from any platform, normalized.

    `workspace` is the Discord guild id (or "dm"), the Slack team id, or "local" for the terminal.
    `is_direct` is true for a one-to-one conversation with the bot (adapters pass on only the messages meant for
    the bot). `roles` is None on platforms without roles (Slack, the terminal): role rules do not apply there.
    """

    platform: str
    workspace: str
    channel_id: str
    user_id: str
    user_name: str
    text: str
    message_id: str
    thread_id: str | None = None
    link: str | None = None
    sent_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    is_direct: bool = False
    roles: tuple[str, ...] | None = None
    edited_at: datetime | None = None  # set on an edited message: when it was last edited

    @property
    def user(self) -> UserRef:
        return UserRef(self.platform, self.workspace, self.user_id)

    @property
    def ref(self) -> MessageRef:
        return MessageRef(self.platform, self.workspace, self.channel_id, self.message_id)

    @property
    def conversation_key(self) -> str:
        """Identifies the conversation (channel or thread) for short-term history."""
        return f"{self.platform}:{self.workspace}:{self.channel_id}:{self.thread_id or ''}"


@dataclass(frozen=True)
class MessageRef:
    """A message deleted or edited on its platform, as the core knows it: `workspace` and `channel_id` as in
    `IncomingMessage`. `channel_id` is None where message ids are unique in a workspace (Discord: a delete
    event names the thread, the message named its parent channel)."""

    platform: str
    workspace: str
    channel_id: str | None
    message_id: str

    def matches(self, msg: IncomingMessage) -> bool:
        return (msg.platform, msg.workspace, msg.message_id) == (self.platform, self.workspace, self.message_id) \
            and self.channel_id in (None, msg.channel_id)


class ReplyTarget(Protocol):
    """How the core answers: the adapter owns splitting, throttled edits and platform formatting."""

    async def send(self, text: str) -> None:
        """Send one complete message (notices, errors, command answers)."""

    async def stream(self, deltas: AsyncIterator[str]) -> str:
        """Render a reply as its text arrives (send a first part, then edit it); return the text shown."""

    def typing(self) -> AbstractAsyncContextManager[None]:
        """Show that the bot is working while the block runs (a no-op where the platform has none)."""
