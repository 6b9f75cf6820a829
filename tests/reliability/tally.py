"""Counting a section's cases: a `Table` of rows (a kind of case), each with how many were tried and the
violations found (what went wrong, in words a developer can act on), and any measurements (`data`). Printed by
bench/reliability.py, asserted empty by the tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    case: str
    tried: int = 0
    violations: list[str] = field(default_factory=list)


@dataclass
class Table:
    section: str
    rows: dict[str, Row] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # measurements beside the counts (e.g. RSS over time)

    def row(self, case: str) -> Row:
        return self.rows.setdefault(case, Row(case))

    def check(self, case: str, ok: bool, violation: str = "") -> bool:
        """Count one case of kind `case`; `violation` says what went wrong when `ok` is false."""
        row = self.row(case)
        row.tried += 1
        if not ok:
            row.violations.append(violation or case)
        return ok

    def add(self, case: str, tried: int, violations: list[str]) -> None:
        row = self.row(case)
        row.tried += tried
        row.violations.extend(violations)

    def merge(self, other: Table) -> None:
        for row in other.rows.values():
            self.add(row.case, row.tried, row.violations)

    @property
    def tried(self) -> int:
        return sum(row.tried for row in self.rows.values())

    @property
    def violations(self) -> list[str]:
        return [f"{row.case}: {v}" for row in self.rows.values() for v in row.violations]

    def markdown(self) -> str:
        lines = [f"| {self.section} | cases tried | violations |", "|---|---:|---:|"]
        lines += [f"| {row.case} | {row.tried} | {len(row.violations)} |" for row in self.rows.values()]
        lines.append(f"| **total** | **{self.tried}** | **{len(self.violations)}** |")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"section": self.section, "tried": self.tried, "violations": len(self.violations),
                "rows": [{"case": r.case, "tried": r.tried, "violations": r.violations[:20]}
                         for r in self.rows.values()], **({"data": self.data} if self.data else {})}


def assert_clean(*tables: Table) -> None:
    """What each section's CI test asserts: every table tried something and found no violation (the report,
    every table and its first violations, is the assertion's message)."""
    report = "\n\n".join(f"{t.markdown()}\n" + "\n".join(t.violations[:30]) for t in tables)
    print(report)
    assert all(t.tried > 0 for t in tables), report
    assert not any(t.violations for t in tables), report
