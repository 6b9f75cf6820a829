from bot.access import AccessPolicy
from tests.bot.helpers import message


def msg(user="u1", channel="c1", direct=False, roles=()):
    return message("hi", user=user, channel=channel, direct=direct, roles=roles, platform="discord", workspace="g1")


def test_allow_and_block_lists(make_settings):
    policy = AccessPolicy(make_settings(blocked_users=frozenset({"bad"}), allowed_channels=frozenset({"c1"}),
                                        blocked_roles=frozenset({"muted"})).access)
    assert policy.check(msg()).allowed
    assert not policy.check(msg(user="bad")).allowed
    assert not policy.check(msg(channel="c2")).allowed
    assert not policy.check(msg(roles=("muted",))).allowed
    assert policy.check(msg(channel="anything", direct=True)).allowed


def test_dms_off_says_so(make_settings):
    decision = AccessPolicy(make_settings(allow_dms=False).access).check(msg(direct=True))
    assert not decision.allowed and decision.reply


def test_rate_limit_is_per_user_and_polite(make_settings):
    now = [0.0]
    access = make_settings(rate_limit_messages=2, rate_limit_window_seconds=60).access
    policy = AccessPolicy(access, clock=lambda: now[0])
    assert policy.check(msg()).allowed
    assert policy.check(msg()).allowed
    limited = policy.check(msg())
    assert not limited.allowed and "wait" in limited.reply
    assert policy.check(msg(user="u2")).allowed
    now[0] = 61
    assert policy.check(msg()).allowed


def test_role_rules_skip_platforms_without_roles(make_settings):
    policy = AccessPolicy(make_settings(allowed_roles=frozenset({"r1"}), blocked_roles=frozenset({"muted"})).access)
    assert policy.check(msg(roles=None)).allowed  # e.g. Slack: no roles, so no role rule can apply
    assert not policy.check(msg(roles=())).allowed
    assert policy.check(msg(roles=("r1",))).allowed


def test_a_flood_gets_one_notice_per_wait(make_settings):
    now = [0.0]
    access = make_settings(rate_limit_messages=1, rate_limit_window_seconds=60).access
    policy = AccessPolicy(access, clock=lambda: now[0])
    assert policy.check(msg()).allowed
    first, second = policy.check(msg()), policy.check(msg())
    assert not first.allowed and first.reply and not second.allowed and second.reply is None
    now[0] = 61
    assert policy.check(msg()).allowed
    assert policy.check(msg()).reply  # a new wait is told again


def test_a_refused_command_always_hears_why(make_settings):
    policy = AccessPolicy(make_settings(rate_limit_messages=1, rate_limit_window_seconds=60).access, clock=lambda: 0.0)
    assert policy.check(msg(), command=True).allowed
    assert "wait" in policy.check(msg(), command=True).reply
    assert "wait" in policy.check(msg(), command=True).reply  # answered privately: no flood to avoid
