"""The core's locks: taken in one order, and a wrong order fails at once instead of deadlocking."""

from __future__ import annotations

import asyncio

import pytest

from bot.memories.locks import LockOrderError, Locks
from bot.message import MessageRef

REF = MessageRef("console", "local", "terminal", "m1")


async def test_both_locks_are_taken_message_first() -> None:
    locks = Locks()
    async with locks.hold(message=REF, user="u1"):
        other = asyncio.create_task(_hold(locks, message=REF))
        await asyncio.sleep(0.01)
        assert not other.done()  # the message lock is held
    await asyncio.wait_for(other, 1)


async def test_a_message_lock_inside_a_user_lock_is_refused() -> None:
    locks = Locks()
    async with locks.hold(user="u1"):
        with pytest.raises(LockOrderError):
            async with locks.hold(message=REF):
                pass
    async with locks.hold(message=REF):  # released properly after the refusal
        pass


async def test_a_task_started_under_a_user_lock_holds_nothing() -> None:
    locks = Locks()
    async with locks.hold(user="u1"):
        await asyncio.wait_for(asyncio.create_task(_hold(locks, message=REF)), 1)


async def test_the_order_check_ends_with_the_lock_even_on_errors() -> None:
    locks = Locks()
    with pytest.raises(ValueError):
        async with locks.hold(user="u1"):
            raise ValueError
    async with locks.hold(message=REF, user="u1"):
        pass


async def _hold(locks: Locks, **which: object) -> None:
    async with locks.hold(**which):  # type: ignore[arg-type]
        pass
