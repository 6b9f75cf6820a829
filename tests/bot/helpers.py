"""A reply target that records what the core sent, for tests of the core."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from bot.commands import Command
from bot.message import IncomingMessage


class RecordingReply:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.streamed: list[str] = []
        self.deltas: list[list[str]] = []
        self.typing_count = 0

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def stream(self, deltas: AsyncIterator[str]) -> str:
        pieces = [d async for d in deltas]
        self.deltas.append(pieces)
        self.streamed.append("".join(pieces))
        return "".join(pieces)

    @asynccontextmanager
    async def typing(self):
        self.typing_count += 1
        yield


def message(text: str, *, user: str = "dana", platform: str = "console", workspace: str = "local",
            direct: bool = True, channel: str = "terminal", message_id: str = "m1",
            roles: tuple[str, ...] | None = None) -> IncomingMessage:
    """The one builder of normalized messages in the tests (platform payloads come from each fake)."""
    return IncomingMessage(platform=platform, workspace=workspace, channel_id=channel, user_id=user,
                           user_name=user.title(), text=text, message_id=message_id, is_direct=direct,
                           link=f"https://example.test/{channel}/{message_id}", roles=roles,
                           sent_at=datetime(2026, 11, 26, 10, 0, tzinfo=UTC))


def sample_arg(command: Command) -> str:
    """An argument every command accepts, for tests that run each command of the table once."""
    if command.arg is None:
        return ""
    return "1" if command.arg.kind is int else "tea"
