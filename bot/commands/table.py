"""Every command users have, once: its name, argument, help line, who may use it, and what it answers.

Adding a command is one entry in `COMMANDS` and its handler here; the terminal, Discord and Slack pick it up
(help, slash commands, Slack's `/memory` words), and a test checks that the docs and the Slack manifest list it.
"""

from __future__ import annotations

import json

from bot.commands.base import (
    Arg,
    Attachment,
    Call,
    Command,
    Confirm,
    Dialect,
    Reply,
    Result,
    plural,
    record_line,
)
from bot.errors import UserError


def _memories_n(count: int) -> str:
    return plural(count, "memory", "memories")


async def list_memories(call: Call) -> Result:
    if call.arg and not call.arg.isdigit():
        raise UserError(f"Give a page number, e.g. {call.usage('memories', '2')}.")
    controls, d = call.memories.controls, call.dialect
    page = await controls.list(call.user, page=int(call.arg or 1))
    if not page.total:
        lines = ["I don't remember anything about you yet."]
    else:
        lines = [f"{d.bold('What I remember about you')} (page {page.page} of {page.pages}, {page.total} in all)"]
        lines += [record_line(r, d, page.first_number + i) for i, r in enumerate(page.records)]
        if page.page < page.pages:
            lines.append(f"More: {call.usage('memories', str(page.page + 1))}")
        lines.append(f"Forget one with {call.usage('forget')}.")
    if await controls.is_paused(call.user):
        lines.append(f"Learning is paused for you; {call.usage('resume')} turns it back on.")
    return Reply("\n".join(lines))


async def remember(call: Call) -> Result:
    record = await call.memories.controls.remember(call.msg, call.arg)
    return Reply(f"I'll remember that: {call.dialect.escape(record.text)} (id {call.dialect.code(record.id)})")


async def search(call: Call) -> Result:
    found = await call.memories.controls.search(call.msg, call.arg)
    lines = [record_line(r, call.dialect, i) for i, r in enumerate(found, start=1)]
    return Reply("\n".join(lines) or "Nothing I remember about you matches that.")


async def why(call: Call) -> Result:
    used = await call.memories.recall.why(call.user)
    if not used:
        return Reply("My last reply to you used no memories.")
    lines = [record_line(r, call.dialect, i) for i, r in enumerate(used, start=1)]
    return Reply("My last reply to you used:\n" + "\n".join(lines))


async def forget(call: Call) -> Result:
    memory_id = call.dialect.code(call.dialect.escape(call.arg))
    if await call.memories.forgetting.forget(call.user, call.arg):
        return Reply(f"Forgotten: {memory_id}.")
    return Reply(f"I have no memory {memory_id} about you. {call.usage('memories')} lists the ids.")


async def forget_all(call: Call) -> Result:
    where = call.dialect.scope(call.user)
    if call.confirmed:
        count = await call.memories.forgetting.forget_all(call.user)
        return Reply(f"Done: I forgot {_memories_n(count)} about you {where}.")
    total = await call.memories.controls.count_all(call.user)
    if not total:  # no stored memory to confirm, but recent turns and queued exchanges still go
        if count := await call.memories.forgetting.forget_all(call.user):  # learned just now
            return Reply(f"Done: I forgot {_memories_n(count)} about you {where}.")
        return Reply(f"I don't remember anything about you {where}. I also let go of our recent messages, "
                     "so nothing of them will be learned.")
    return Confirm(
        question=f"Forget {call.dialect.bold('all ' + _memories_n(total))} I have about you {where}? "
                 "This cannot be undone.",
        confirm_label="Forget everything", command="forget-all",
        cancelled="Cancelled: nothing was forgotten.", timed_out="Timed out: nothing was forgotten.",
    )


async def export(call: Call) -> Result:
    data = await call.memories.controls.export(call.user)
    if not data["memories"]:
        return Reply("There is nothing to export: I don't remember anything about you yet.")
    return Attachment(
        text=f"Everything I remember about you {call.dialect.scope(call.user)}, with its sources: "
             f"{_memories_n(len(data['memories']))}.",
        filename="memories.json", content=json.dumps(data, indent=2, ensure_ascii=False),
    )


async def pause(call: Call) -> Result:
    await call.memories.controls.pause(call.user)
    return Reply(f"Paused: I won't learn anything new about you until you use {call.usage('resume')}.")


async def resume(call: Call) -> Result:
    await call.memories.controls.resume(call.user)
    return Reply("Resumed: I'll learn from your messages again.")


async def show_help(call: Call) -> Result:
    return Reply(help_text(call.dialect))


COMMANDS: tuple[Command, ...] = (
    Command("memories", "what I remember about you, with ids and where you said it", list_memories,
            Arg("page", "Page number, starting at 1", int, required=False), words="list"),
    Command("remember", "remember something exactly as you say it", remember,
            Arg("text", "What to remember"), gated=True),
    Command("search", "search what I remember about you", search, Arg("query", "What to look for"), gated=True),
    Command("why", "which memories my last reply to you used", why),
    Command("forget", "forget one memory (the list shows the ids)", forget, Arg("id", "The memory id")),
    Command("forget-all", "forget everything I remember about you here (asks to confirm)", forget_all,
            words="forget all"),
    Command("export", "all your memories with their sources, as a JSON file", export),
    Command("pause", "stop learning about you (what I know stays)", pause),
    Command("resume", "start learning about you again", resume),
    Command("help", "every command, one line each", show_help),
)


def command_named(name: str) -> Command:
    for command in COMMANDS:
        if command.name == name:
            return command
    raise KeyError(name)


def help_text(dialect: Dialect) -> str:
    """One line per command: how to type it here, and what it does."""
    lines = [f"{dialect.code(dialect.usage(command, None))}: {command.help}" for command in COMMANDS]
    return "\n".join([dialect.bold("Commands"), *("• " + line for line in lines)])


def parse_words(text: str) -> tuple[Command | None, str]:
    """The command a platform with a single command was given (Slack: `/memory forget all`, or by its name,
    `/memory forget-all`), and the rest."""
    text = " ".join(text.split())
    spellings = sorted(((c, words) for c in COMMANDS for words in {c.words, c.name}),
                       key=lambda spelled: -len(spelled[1].split()))
    for command, words in spellings:
        if text.lower() == words or text.lower().startswith(words + " "):
            return command, text[len(words):].strip()
    return None, text
