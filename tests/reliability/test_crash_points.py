"""CI sample of section 1 (crash points): one bot per store killed (SIGKILL) at four named steps in turn (an
exchange just queued, a fact just stored, a deletion and a forget-all half-way), restarted each time, then checked:
every exchange learned once, every deletion finished, nothing forgotten back, the SQLite files sound, and no log
line quoting a secret or what a user said. `bench/reliability.py` runs every kill point."""

from __future__ import annotations

import pytest

from tests.reliability.crash_points import run
from tests.reliability.tally import assert_clean

pytestmark = pytest.mark.reliability


async def test_killed_at_each_step_loses_nothing_and_forgets_for_good(tmp_path, postgres):
    table, logs = await run(tmp_path, full=False, postgres=postgres)
    assert_clean(table, logs)
