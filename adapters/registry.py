"""The platforms `memorybot` can serve, by subcommand: one line each (see `adapters/platform.py`)."""

from __future__ import annotations

import importlib

from adapters.platform import Platform

PLATFORMS: dict[str, str] = {
    "chat": "adapters.console:ConsolePlatform",
    "discord": "adapters.discord:DiscordPlatform",
    "slack": "adapters.slack:SlackPlatform",
    "worker": "adapters.worker:WorkerPlatform",
}


def platform_class(name: str) -> type[Platform]:
    module, _, attribute = PLATFORMS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]
