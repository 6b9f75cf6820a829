"""CI's sample of section 2 of the reliability suite (issue 17): generated isolation steps, counted
(tests/reliability/isolation.py; bench/reliability.py runs the full counts)."""

from pathlib import Path

import pytest

from tests.reliability.isolation import run
from tests.reliability.tally import assert_clean

pytestmark = pytest.mark.reliability


async def test_generated_steps_never_cross_identities_or_bring_back_what_was_forgotten(tmp_path: Path) -> None:
    table, logs = await run(tmp_path, full=False)
    assert_clean(table, logs)
