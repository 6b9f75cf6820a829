"""CI sample of section 6 (load, tests/reliability/load.py): 10 users x 5 messages on Slack and on Discord; every
message answered or told to retry, the queue drained with each exchange learned once, RSS flat, logs clean."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.load import run
from tests.reliability.tally import assert_clean

pytestmark = pytest.mark.reliability


async def test_load_sample(tmp_path: Path) -> None:
    table, logs = await run(tmp_path, full=False)
    assert_clean(table, logs)
