"""CI's sample of section 2 of the reliability suite (issue 17): generated isolation steps, counted
(tests/reliability/isolation.py; bench/reliability.py runs the full counts)."""

from pathlib import Path

import pytest

from tests.reliability.isolation import run

pytestmark = pytest.mark.reliability


async def test_generated_steps_never_cross_identities_or_bring_back_what_was_forgotten(tmp_path: Path) -> None:
    table, logs = await run(tmp_path, full=False)
    report = f"{table.markdown()}\n\n{logs.markdown()}\n{table.data}\n" + "\n".join(table.violations[:20] +
                                                                               logs.violations[:20])
    assert table.tried > 0 and logs.tried > 0, report
    assert not table.violations, report
    assert not logs.violations, report
