"""Section 4 of issue 17 (outages), CI's sample: every message answered or told what is wrong, every exchange
learned once after recovery, no log line quoting a secret or a user (see tests/reliability/outages.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.outages import run
from tests.reliability.tally import assert_clean

pytestmark = pytest.mark.reliability


async def test_outages_are_answered_or_told_and_everything_is_learned_after_recovery(tmp_path: Path) -> None:
    table, logs = await run(tmp_path, full=False)
    assert_clean(table, logs)
