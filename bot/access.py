"""Who the bot answers: allow/block lists for users, channels and roles, DMs on or off, a rate limit.

The core checks every message it is handed (`MessageHandler.handle`) and every command that stores or
searches (the command table marks them; `bot/commands`), and sends `Decision.reply`, if any; otherwise ignored
messages get no answer at all. Seeing, exporting and deleting one's own memories is never refused.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bot.message import IncomingMessage
from bot.settings import AccessSettings


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    reply: str | None = None  # what to tell the user, None for silent ignore


ALLOW = Decision(True)


class RateLimiter:
    """A sliding window of recent message times per user."""

    def __init__(self, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window = window_seconds
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._told_until: dict[str, float] = {}

    def hit(self, key: str) -> tuple[float, bool]:
        """Record one message. Return (0, False) if allowed, else the seconds until the user may write again
        and whether this is the first refusal of that wait (only that one is worth telling the user)."""
        if self._limit <= 0:
            return 0.0, False
        now = self._clock()
        times = self._seen.setdefault(key, deque())
        while times and now - times[0] >= self._window:
            times.popleft()
        if len(times) >= self._limit:
            wait = self._window - (now - times[0])
            first = now >= self._told_until.get(key, 0.0)
            self._told_until[key] = now + wait
            return wait, first
        if not times:  # a quiet user: forget them, so the tables hold only recent writers
            self._told_until.pop(key, None)
        times.append(now)
        return 0.0, False


class AccessPolicy:
    """Applies the access settings to a message; the same rules on every platform."""

    def __init__(self, settings: AccessSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._s = settings
        self._limiter = RateLimiter(settings.rate_limit_messages, settings.rate_limit_window_seconds, clock)

    def is_admin(self, user_id: str) -> bool:
        return user_id in self._s.admin_users

    def check(self, msg: IncomingMessage, *, command: bool = False, rate_limited: bool = True) -> Decision:
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
        wait, first = self._limiter.hit(msg.user.key)
        if wait > 0:  # told once per wait, so a flood does not become a flood of notices
            notice = f"You're sending messages a bit fast. Please wait {wait:.0f} s and try again."
            return Decision(False, "rate limited", notice if first or command else None)
        return ALLOW
