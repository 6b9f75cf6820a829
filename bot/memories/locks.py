"""The core's two kinds of lock, and the one order they are taken in.

A message lock is held while a message is forgotten or relearned and while its reply is queued, so a
deletion, an edit and the reply each see what the one before did. A user lock is held while one of the user's
memories is stored and while they forget or pause, so a write-back in progress never adds back what the user
just deleted. Whoever needs both takes the message lock first: `Locks.hold` takes what it is asked for in that
order, and asking for a message lock while holding a user lock raises `LockOrderError` (a deadlock waiting
to happen), so a wrong order fails in tests instead of hanging in production.

When other bot processes share the state (PostgreSQL), each lock is also taken there (`shared`, an advisory lock
every process sees), after the in-process one, so a process asks the server for a key once at a time.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from typing import TypeVar

from bot.message import MessageRef

K = TypeVar("K")
SharedLock = Callable[[str], AbstractAsyncContextManager[None]]

# The task holding a user lock: tasks started meanwhile inherit the variable, but hold nothing.
_user_lock_holder: ContextVar[asyncio.Task[object] | None] = ContextVar("user_lock_holder", default=None)


class LockOrderError(RuntimeError):
    """A message lock was asked for while a user lock was held."""


def message_key(ref: MessageRef) -> tuple[str, str, str]:
    """What identifies a message for locking and change tracking (its channel may be unknown; see MessageRef)."""
    return (ref.platform, ref.workspace, ref.message_id)


class Locks:
    """Per-user and per-message locks; unused ones go away by themselves."""

    def __init__(self, shared: SharedLock | None = None) -> None:
        self._shared = shared
        self._users: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._messages: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = \
            weakref.WeakValueDictionary()

    @asynccontextmanager
    async def hold(self, *, message: MessageRef | None = None, user: str | None = None) -> AsyncIterator[None]:
        """Hold the lock of `message`, then the lock of the user with key `user` (either may be left out)."""
        async with AsyncExitStack() as stack:
            if message is not None:
                if _user_lock_holder.get() is asyncio.current_task():
                    raise LockOrderError("a message lock must be taken before the user lock, not inside it")
                key = message_key(message)
                await stack.enter_async_context(_lock(self._messages, key))
                if self._shared is not None:
                    await stack.enter_async_context(self._shared("message:" + ":".join(key)))
            if user is not None:
                await stack.enter_async_context(_lock(self._users, user))
                if self._shared is not None:
                    await stack.enter_async_context(self._shared("user:" + user))
                token = _user_lock_holder.set(asyncio.current_task())
                stack.callback(_user_lock_holder.reset, token)
            yield


def _lock(locks: weakref.WeakValueDictionary[K, asyncio.Lock], key: K) -> asyncio.Lock:
    lock = locks.get(key)
    if lock is None:
        lock = locks[key] = asyncio.Lock()
    return lock
