"""CI's sample of section 3 for Slack (tests/reliability/hostile_slack.py): hostile input over real HTTP to the
real bolt app and bot; no crash, no ping, nothing learned from rejected input, replays answered once, clean logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.hostile_slack import run
from tests.reliability.tally import assert_clean

pytestmark = pytest.mark.reliability


async def test_hostile_slack_input(tmp_path: Path) -> None:
    table, logs = await run(tmp_path, full=False)
    assert_clean(table, logs)
