"""End to end with the real bundled model, real mem0 and separate processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest

from adapters.console.chat import ConsoleSession
from bot.app import MemoryBot
from bot.settings import Settings

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def cli(settings: Settings, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATA_DIR": str(settings.data_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "adapters.cli", "--env-file", "/dev/null", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600, **kwargs)


def memories_json(settings: Settings, *args: str) -> list[dict]:
    result = cli(settings, "memories", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_dana_is_remembered_for_her_alone(real_settings):
    out = StringIO()
    async with MemoryBot(real_settings) as bot:
        session = ConsoleSession(bot, "dana", out=out)
        await session.on_line("My name is Dana and I am vegetarian")
        await bot.writeback.drain()
    assert out.getvalue().startswith("bot> ") and len(out.getvalue()) > 10

    # a new process lists what was learned, with its source
    facts = memories_json(real_settings, "--platform", "console", "--user", "dana")
    vegetarian = [f for f in facts if "vegetarian" in f["text"].lower()]
    assert vegetarian, facts
    fact = vegetarian[0]
    assert fact["id"] and fact["created_at"]
    assert fact["source"]["platform"] == "console" and fact["source"]["workspace"] == "local"
    assert fact["source"]["origin"] == "extracted" and fact["source"]["message_id"]

    # nobody else recalls it: another user, the same id on another platform or workspace
    assert memories_json(real_settings, "--platform", "console", "--user", "sam") == []
    assert memories_json(real_settings, "--platform", "discord", "--workspace", "local", "--user", "dana") == []
    assert memories_json(real_settings, "--platform", "console", "--workspace", "elsewhere", "--user", "dana") == []


async def test_reply_uses_a_remembered_fact(real_settings):
    reply = StringIO()
    async with MemoryBot(real_settings) as bot:
        session = ConsoleSession(bot, "dana", out=reply)
        await session.on_line("/remember My favourite colour is green")
        await session.on_line("What is my favourite colour?")
    assert "green" in reply.getvalue().split("bot> ")[-1].lower()


async def test_killed_process_finishes_writeback_after_restart(real_settings):
    env = {**os.environ, "DATA_DIR": str(real_settings.data_dir), "HF_HUB_OFFLINE": "1"}
    chat = subprocess.Popen(
        [sys.executable, "-m", "adapters.cli", "--env-file", "/dev/null", "chat", "--user", "dana"],
        cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert chat.stdin and chat.stdout
        chat.stdin.write("I am a vegetarian and I live in Porto\n")
        chat.stdin.flush()
        for line in chat.stdout:  # wait for the streamed reply to end
            if "bot> " in line:
                break
        queue = real_settings.database_path
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with sqlite3.connect(queue) as db:
                if db.execute("SELECT COUNT(*) FROM pending_exchanges").fetchone()[0]:
                    break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the exchange was never queued")
    finally:
        chat.send_signal(signal.SIGKILL)
        chat.wait()
    assert memories_json(real_settings, "--platform", "console", "--user", "dana") == []

    async with MemoryBot(real_settings) as bot:  # the next start resumes the pending write-back
        await bot.writeback.drain()
    texts = [f["text"].lower() for f in memories_json(real_settings, "--platform", "console", "--user", "dana")]
    assert any("vegetarian" in t for t in texts), texts


async def test_a_new_user_is_learned_from_their_own_words(real_settings):
    """The issue's first chat: every fact of a message is learned, a question teaches nothing (the bot's answer
    is never a source), and the profile (name, home) is in the next prompt whatever is asked."""
    async with MemoryBot(real_settings) as bot:
        session = ConsoleSession(bot, "priya", out=StringIO())
        await session.on_line("Hi! I'm Priya. I live in Lisbon and I'm allergic to peanuts. "
                              "I mostly write Rust at work.")
        await bot.writeback.drain()
        user = session.message("x").user
        learned = [r.text.lower() for r in (await bot.memories.controls.list(user, page_size=100)).records]
        for word in ("priya", "lisbon", "peanut", "rust"):
            assert any(word in fact for fact in learned), (word, learned)
        await session.on_line("What city do I live in, and what should I avoid eating?")
        await bot.writeback.drain()
        assert [r.text.lower() for r in (await bot.memories.controls.list(user, page_size=100)).records] == learned
        profile = await bot.memories.recall.profile(session.message("tell me a joke"))
        assert {r.attribute for r in profile} >= {"name", "home"}
        kept = [r.text for r in await bot.store.list(user.key, kinds=("message",))]
        assert len(kept) == 2 and kept[-1].startswith("Hi! I'm Priya.")
