"""CI's sample of section 3 for Discord (tests/reliability/hostile_discord.py): malformed and adversarial gateway
events to the real discord.py client and bot; no crash, no ping, a clear answer where the bot was addressed,
nothing learned from what it did not answer, forged ids reach no one else's memory, clean logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.hostile_discord import run
from tests.reliability.tally import assert_clean

pytestmark = pytest.mark.reliability


async def test_hostile_discord_input(tmp_path: Path) -> None:
    table, logs = await run(tmp_path, full=False)
    assert_clean(table, logs)
