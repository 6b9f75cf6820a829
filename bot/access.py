"""Who the bot answers: allow/block lists for users, channels and roles, DMs on or off, a rate limit.

The core checks every message it is handed (`MessageHandler.handle`) and every command that stores or
searches (the command table marks them; `bot/commands`), and sends `Decision.reply`, if any; otherwise ignored
messages get no answer at all. Seeing, exporting and deleting one's own memories is never refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.message import IncomingMessage
from bot.settings import AccessSettings
from bot.sql import Sql


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    reply: str | None = None  # what to tell the user, None for silent ignore


ALLOW = Decision(True)


class RateLimiter:
    """A sliding window of recent message times per user, in the recent-activity tables (`BotDatabase.recent`):
    shared by every replica when the state is, so a user writing through several counts once. Replicas counting
    the same user at the same instant may let one message more through; the limit is a courtesy, not a quota."""

    def __init__(self, sql: Sql, limit: int, window_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._sql = sql
        self._limit = limit
        self._window = window_seconds
        self._clock = clock

    async def hit(self, key: str) -> tuple[float, bool]:
        """Record one message. Return (0, False) if allowed, else the seconds until the user may write again
        and whether this is the first refusal of that wait (only that one is worth telling the user)."""
        if self._limit <= 0:
            return 0.0, False
        now = self._clock()
        async with self._sql.transaction() as tx:
            await tx.execute("DELETE FROM rate_hits WHERE at <= ?", (now - self._window,))  # everyone's old hits
            [(count, oldest)] = await tx.fetchall("SELECT COUNT(*), min(at) FROM rate_hits WHERE user_key = ?",
                                                  (key,))
            if count >= self._limit:
                wait = self._window - (now - float(oldest))
                told = await tx.fetchall("SELECT told_until FROM rate_notices WHERE user_key = ?", (key,))
                first = not told or now >= float(told[0][0])
                await tx.execute("INSERT INTO rate_notices (user_key, told_until) VALUES (?, ?) "
                                 "ON CONFLICT (user_key) DO UPDATE SET told_until = excluded.told_until",
                                 (key, now + wait))
                return wait, first
            if not count:  # a quiet user: forget their notice, so the table holds only recent writers
                await tx.execute("DELETE FROM rate_notices WHERE user_key = ?", (key,))
            await tx.execute("INSERT INTO rate_hits (user_key, at) VALUES (?, ?)", (key, now))
        return 0.0, False


class AccessPolicy:
    """Applies the access settings to a message; the same rules on every platform."""

    def __init__(self, settings: AccessSettings, sql: Sql, clock: Callable[[], float] = time.time) -> None:
        self._s = settings
        self._limiter = RateLimiter(sql, settings.rate_limit_messages, settings.rate_limit_window_seconds, clock)

    def is_admin(self, user_id: str) -> bool:
        return user_id in self._s.admin_users

    async def check(self, msg: IncomingMessage, *, command: bool = False, rate_limited: bool = True) -> Decision:
        """Whether to answer `msg`. A `command` (answered privately) always hears why it is refused; without
        `rate_limited` the rules apply but the message does not count towards the rate limit."""
        s = self._s
        if msg.user_id in s.blocked_users:
            return Decision(False, "blocked user")
        if s.allowed_users and msg.user_id not in s.allowed_users and not self.is_admin(msg.user_id):
            return Decision(False, "user not allowed")
        if msg.is_direct:
            if not s.allow_dms:
                return Decision(False, "direct messages are off",
                                "Sorry, I don't answer direct messages here.")
        else:
            if msg.channel_id in s.blocked_channels:
                return Decision(False, "blocked channel")
            if s.allowed_channels and msg.channel_id not in s.allowed_channels:
                return Decision(False, "channel not allowed")
            if msg.roles is not None and s.blocked_roles.intersection(msg.roles):
                return Decision(False, "blocked role")
            if msg.roles is not None and s.allowed_roles and not s.allowed_roles.intersection(msg.roles):
                return Decision(False, "role not allowed")
        if not rate_limited:
            return ALLOW
        wait, first = await self._limiter.hit(msg.user.key)
        if wait > 0:  # told once per wait, so a flood does not become a flood of notices
            notice = f"You're sending messages a bit fast. Please wait {wait:.0f} s and try again."
            return Decision(False, "rate limited", notice if first or command else None)
        return ALLOW
