"""Section 4 of issue 17 (outages), CI's sample: every message answered or told what is wrong, every exchange
learned once after recovery, no log line quoting a secret or a user (see tests/reliability/outages.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.outages import run

pytestmark = pytest.mark.reliability


async def test_outages_are_answered_or_told_and_everything_is_learned_after_recovery(tmp_path: Path) -> None:
    table, logs = await run(tmp_path, full=False)
    report = f"{table.markdown()}\n\n{logs.markdown()}\n\n{table.violations[:30]}\n{logs.violations[:30]}"
    print(report)
    assert table.tried > 0 and logs.tried > 0, report
    assert not table.violations, report
    assert not logs.violations, report
