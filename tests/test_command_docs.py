"""The command table is the one source of every command list: README, docs/slack.md and the Slack manifest must
say what `bot/commands/table.py` says (on a mismatch, the assertion shows the text to paste)."""

from __future__ import annotations

import re
from pathlib import Path

from adapters.console.chat import CONSOLE
from adapters.discord.commands import DISCORD
from adapters.slack.commands import SLACK
from bot.commands import COMMANDS

REPO = Path(__file__).resolve().parent.parent


def _block(path: Path, name: str) -> str:
    """The text between `<!-- commands: name -->` and `<!-- end commands -->`."""
    found = re.search(rf"<!-- commands: {name} -->\n(.*?)<!-- end commands -->", path.read_text(), re.S)
    assert found, f"{path.name} has no <!-- commands: {name} --> block"
    return found.group(1)


def readme_table() -> str:
    rows = ["| terminal | Discord | Slack | what it does |", "|---|---|---|---|"]
    for command in COMMANDS:
        usages = (dialect.usage(command, None) for dialect in (CONSOLE, DISCORD, SLACK))
        rows.append("| " + " | ".join(f"`{usage}`" for usage in usages) + f" | {command.help} |")
    return "\n".join(rows) + "\n"


def slack_list() -> str:
    return "".join(f"  - `{SLACK.usage(command, None)}`: {command.help}\n" for command in COMMANDS)


def manifest_hint() -> str:
    return " | ".join(SLACK.usage(command, None).removeprefix("/memory ") for command in COMMANDS)


def test_the_readme_lists_every_command_on_every_platform() -> None:
    assert _block(REPO / "README.md", "all") == readme_table()


def test_the_slack_guide_lists_every_command() -> None:
    assert _block(REPO / "docs" / "slack.md", "slack") == slack_list()


def test_the_slack_manifest_hints_every_command() -> None:
    hint = re.search(r'usage_hint: "(.*)"', (REPO / "manifest.yml").read_text())
    assert hint and hint.group(1) == manifest_hint()
