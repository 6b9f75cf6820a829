"""CI's sample of section 3 for Slack (tests/reliability/hostile_slack.py): hostile input over real HTTP to the
real bolt app and bot; no crash, no ping, nothing learned from rejected input, replays answered once, clean logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.hostile_slack import run

pytestmark = pytest.mark.reliability


async def test_hostile_slack_input(tmp_path: Path) -> None:
    table, logs = await run(tmp_path, full=False)
    report = f"\n{table.markdown()}\n\n{logs.markdown()}\n" + "\n".join(table.violations[:40] + logs.violations[:20])
    assert table.tried > 0 and logs.tried > 0, report
    assert not table.violations, report
    assert not logs.violations, report
