"""The adapter contract: what every platform provides, and the one way `memorybot` runs one.

An adapter translates and nothing more. Into the core:
- a message for the bot becomes an `IncomingMessage` (the user's identity is platform + workspace + user id) and
  goes to `MemoryBot.handle` with a `ReplyTarget` for its conversation (send, stream, typing);
- a deleted or edited message becomes a `MessageRef` for `MemoryBot.forget_message` / `MemoryBot.message_edited`;
- a command goes to `MemoryBot.command` with the platform's `Dialect`, and the adapter renders the result.
A new platform is one folder under `adapters/` holding a class that satisfies `Platform`, plus one line in
`adapters/registry.py`. `run` is the one shutdown path: SIGTERM (and Ctrl-C, except in the terminal chat, where
Ctrl-C interrupts at once as in any terminal program) sets `stop`; the platform stops receiving and gives the work
it started a few seconds to finish; the core stops its workers (what is queued stays queued); a second signal ends
the process at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar, Protocol

from bot.app import MemoryBot
from bot.llm.base import Backend
from bot.settings import Settings

_log = logging.getLogger(__name__)

FINISH_SECONDS = 10.0  # how long work already started (a reply, a command) may take to finish when stopping


class Platform(Protocol):
    name: ClassVar[str]  # its `memorybot` subcommand
    help: ClassVar[str]
    interactive: ClassVar[bool]  # the terminal is the conversation: logs go to a file, not to it

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Its own command-line options, if any."""

    @classmethod
    def from_env(cls, env_file: str | None, args: argparse.Namespace) -> Platform:
        """The platform with its settings group loaded (a `SettingsError` names a missing or bad variable)."""

    async def prepare(self) -> None:
        """Before the model loads: check credentials with the platform (fail fast), say what is happening."""

    async def serve(self, bot: MemoryBot, stop: asyncio.Event) -> None:
        """Receive events for `bot` until `stop` is set or the platform ends the session; then stop receiving
        and finish (or cancel) the work already started."""


def run(platform: Platform, settings: Settings, *, backend: Backend | None = None) -> None:
    """`memorybot <platform>`: serve until Ctrl-C or SIGTERM (`docker stop`, systemd), then shut down cleanly."""
    try:
        asyncio.run(serve(platform, settings, backend=backend))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down; in the terminal chat, the first
        if platform.interactive:
            raise
    _log.info("stopped")


async def serve(platform: Platform, settings: Settings, *, backend: Backend | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Check the platform's credentials, start the core, serve until `stop` (set by a signal, or by a test)."""
    stop = stop or asyncio.Event()
    await platform.prepare()
    with _stopping_on_signals(platform, stop):
        async with MemoryBot(settings, backend) as bot:
            if not stop.is_set():  # not stopped while the model was loading
                await platform.serve(bot, stop)


@contextmanager
def _stopping_on_signals(platform: Platform, stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM,) if platform.interactive else (signal.SIGINT, signal.SIGTERM)

    def shut_down() -> None:  # once: a second signal then acts as it would without us
        _log.info("%s: shutting down", platform.name)
        for sig in signals:
            loop.remove_signal_handler(sig)
        stop.set()

    installed = []
    for sig in signals:
        try:
            loop.add_signal_handler(sig, shut_down)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # Windows, or not the main thread: Ctrl-C still interrupts
            break
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
