"""Dependencies point inward: adapters -> bot -> memory. Platform SDKs appear only in adapters/."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLATFORM_SDKS = {"discord", "slack_bolt", "slack_sdk", "aiohttp"}
FORBIDDEN = {
    "bot": PLATFORM_SDKS | {"adapters"},
    "memory": PLATFORM_SDKS | {"adapters", "bot"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_inward(package):
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in (REPO / package).rglob("*.py")
        if imported_roots(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_every_module_says_its_role():
    missing = [
        str(path.relative_to(REPO))
        for package in ("bot", "memory", "adapters")
        for path in (REPO / package).rglob("*.py")
        if path.stat().st_size and ast.get_docstring(ast.parse(path.read_text())) is None
    ]
    assert missing == []
