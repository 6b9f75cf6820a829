from collections.abc import AsyncIterator

import pytest

from bot.access import AccessPolicy
from bot.database import BotDatabase
from bot.sql import Sql
from tests.bot.helpers import message


@pytest.fixture
async def recent(tmp_path) -> AsyncIterator[Sql]:
    """The recent-activity tables the rate limit counts in (process memory, as for the embedded default)."""
    db = BotDatabase(tmp_path / "bot.sqlite3")
    await db.open()
    yield db.recent
    await db.close()


def msg(user="u1", channel="c1", direct=False, roles=()):
    return message("hi", user=user, channel=channel, direct=direct, roles=roles, platform="discord", workspace="g1")


async def test_allow_and_block_lists(make_settings, recent):
    policy = AccessPolicy(make_settings(blocked_users=frozenset({"bad"}), allowed_channels=frozenset({"c1"}),
                                        blocked_roles=frozenset({"muted"})).access, recent)
    assert (await policy.check(msg())).allowed
    assert not (await policy.check(msg(user="bad"))).allowed
    assert not (await policy.check(msg(channel="c2"))).allowed
    assert not (await policy.check(msg(roles=("muted",)))).allowed
    assert (await policy.check(msg(channel="anything", direct=True))).allowed


async def test_dms_off_says_so(make_settings, recent):
    decision = await AccessPolicy(make_settings(allow_dms=False).access, recent).check(msg(direct=True))
    assert not decision.allowed and decision.reply


async def test_rate_limit_is_per_user_and_polite(make_settings, recent):
    now = [0.0]
    access = make_settings(rate_limit_messages=2, rate_limit_window_seconds=60).access
    policy = AccessPolicy(access, recent, clock=lambda: now[0])
    assert (await policy.check(msg())).allowed
    assert (await policy.check(msg())).allowed
    limited = (await policy.check(msg()))
    assert not limited.allowed and "wait" in limited.reply
    assert (await policy.check(msg(user="u2"))).allowed
    now[0] = 61
    assert (await policy.check(msg())).allowed


async def test_role_rules_skip_platforms_without_roles(make_settings, recent):
    settings = make_settings(allowed_roles=frozenset({"r1"}), blocked_roles=frozenset({"muted"}))
    policy = AccessPolicy(settings.access, recent)
    assert (await policy.check(msg(roles=None))).allowed  # e.g. Slack: no roles, so no role rule can apply
    assert not (await policy.check(msg(roles=()))).allowed
    assert (await policy.check(msg(roles=("r1",)))).allowed


async def test_a_flood_gets_one_notice_per_wait(make_settings, recent):
    now = [0.0]
    access = make_settings(rate_limit_messages=1, rate_limit_window_seconds=60).access
    policy = AccessPolicy(access, recent, clock=lambda: now[0])
    assert (await policy.check(msg())).allowed
    first, second = await policy.check(msg()), await policy.check(msg())
    assert not first.allowed and first.reply and not second.allowed and second.reply is None
    now[0] = 61
    assert (await policy.check(msg())).allowed
    assert (await policy.check(msg())).reply  # a new wait is told again


async def test_a_refused_command_always_hears_why(make_settings, recent):
    access = make_settings(rate_limit_messages=1, rate_limit_window_seconds=60).access
    policy = AccessPolicy(access, recent, clock=lambda: 0.0)
    assert (await policy.check(msg(), command=True)).allowed
    assert "wait" in (await policy.check(msg(), command=True)).reply
    assert "wait" in (await policy.check(msg(), command=True)).reply  # answered privately: no flood to avoid


async def test_replicas_share_one_rate_limit(make_settings, postgres, tmp_path):
    """Processes sharing the state (DATABASE_URL) count a user's messages together, whichever one they reach."""
    url = postgres.new_database()
    access = make_settings(rate_limit_messages=2, rate_limit_window_seconds=60).access
    one, other = BotDatabase(tmp_path / "a.sqlite3", url), BotDatabase(tmp_path / "b.sqlite3", url)
    await one.open()
    await other.open()
    try:
        first, second = AccessPolicy(access, one.recent), AccessPolicy(access, other.recent)
        assert (await first.check(msg())).allowed and (await second.check(msg())).allowed
        assert not (await first.check(msg())).allowed
        assert (await second.check(msg(user="u2"))).allowed
    finally:
        await one.close()
        await other.close()
