"""How replies look on Discord: split at 2,000 characters with code blocks intact, edited while streaming."""

from __future__ import annotations

from tests.adapters.discord.conftest import StartBot
from tests.adapters.discord.fake_discord import FakeDiscord
from tests.fakes.model import ScriptedBackend

CODE = "```python\n" + "\n".join(f"print('line {i:03d} of a long listing')" for i in range(90)) + "\n```"
LONG_REPLY = "Here is the script you asked for.\n\n" + CODE + "\n\nRun it with python."


async def test_long_reply_is_split_without_breaking_the_code_block(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    assert len(LONG_REPLY) > 3000
    running = await start_bot(backend=ScriptedBackend(reply=LONG_REPLY, chunk=400))
    alice = fake.user("alice")
    msg = await running.say(fake.message(alice, f"{fake.mention()} code", mentions=[fake.bot_user]))
    parts = fake.shown(fake.channel_id)
    assert len(parts) >= 2
    assert all(len(part) <= 2000 for part in parts)
    assert all(part.count("```") % 2 == 0 for part in parts)
    assert parts[1].startswith("```python\n")
    code_lines = [line for part in parts for line in part.splitlines() if line.startswith("print(")]
    assert code_lines == [line for line in CODE.splitlines() if line.startswith("print(")]
    sent = running.replies(fake.channel_id)
    assert sent[0].reference == msg["id"]
    assert all(r.reference is None for r in sent[1:])


async def test_streaming_reply_is_edited_as_text_arrives(start_bot: StartBot, fake: FakeDiscord) -> None:
    reply = " ".join(f"word{i}" for i in range(40))
    running = await start_bot(backend=ScriptedBackend(reply=reply, chunk=25, delay=0.15))
    await running.say(fake.message(fake.user("alice"), f"{fake.mention()} talk", mentions=[fake.bot_user]))
    [first] = running.replies(fake.channel_id)
    edits = fake.sent("PATCH", rf"/channels/{fake.channel_id}/messages/\d+$")
    assert len(first.json["content"]) < len(reply)
    assert len(edits) >= 2  # at least one throttled edit while streaming, then the final text
    assert edits[-1].json["content"] == reply
    assert len(edits) <= 5  # ~2 s of streaming: edits are throttled to about one a second
    assert all(e.json["allowed_mentions"]["parse"] == [] for e in edits)
