"""Who is speaking on Slack, for the core: the workspace of an event, a user's identity, a command as a message."""

from __future__ import annotations

from datetime import UTC, datetime

from slack_bolt.context.async_context import AsyncBoltContext

from bot.message import IncomingMessage, UserRef

PLATFORM = "slack"


def is_id(value: object) -> bool:
    """A Slack id as events carry them (a user, a channel, an event): a string, not empty."""
    return isinstance(value, str) and bool(value)


def workspace_of(context: AsyncBoltContext) -> str:
    """The team (or, for an org-wide app, the enterprise) the event came from."""
    return context.team_id or context.enterprise_id or "unknown"


def user_ref(context: AsyncBoltContext, user_id: str) -> UserRef:
    return UserRef(PLATFORM, workspace_of(context), user_id)


def command_message(context: AsyncBoltContext, user_id: str, user_name: str, channel: str,
                    text: str) -> IncomingMessage:
    """A slash command or a button press as a message, for access checks and `remember` (it has no ts of its
    own and no permalink)."""
    return IncomingMessage(
        platform=PLATFORM, workspace=workspace_of(context), channel_id=channel, user_id=user_id,
        user_name=user_name, text=text, message_id="", sent_at=datetime.now(UTC), is_direct=channel.startswith("D"),
    )
