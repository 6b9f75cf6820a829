"""The vocabulary of commands: what a command is, what it answers, and how a platform writes the answer.

A command's handler gets a `Call` and returns a platform-neutral `Result`: a `Reply` (text), a `Confirm` (a
question the user must confirm, by a button or a typed yes, before the command runs again, `confirmed`) or an
`Attachment` (a file). Text is written through the platform's `Dialect` (its markup, dates and how a user types a
command), so the wording exists once, here and in `table.py`, and each platform only renders the result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from bot.message import IncomingMessage, UserRef
from memory.records import MemoryRecord

if TYPE_CHECKING:
    from bot.memories import Memories

@dataclass(frozen=True)
class Reply:
    text: str


@dataclass(frozen=True)
class Confirm:
    """Ask before doing something that cannot be undone; confirmed, `command` runs again, `confirmed`."""

    question: str
    confirm_label: str
    command: str
    cancelled: str
    timed_out: str


@dataclass(frozen=True)
class Attachment:
    """A file for the user only (`text` goes with it)."""

    text: str
    filename: str
    content: str


Result = Reply | Confirm | Attachment


@dataclass(frozen=True)
class Arg:
    """A command's one argument: a word or text (`str`) or a number (`int`)."""

    name: str
    help: str
    kind: type = str
    required: bool = True


@dataclass(frozen=True)
class Dialect:
    """How one platform writes: markup, dates, a link to a source, and how a user types a command
    (`usage(command, value)`; `value` None shows the argument's placeholder)."""

    code: Callable[[str], str]
    bold: Callable[[str], str]
    escape: Callable[[str], str]
    link: Callable[[str], str]
    date: Callable[[datetime], str]
    usage: Callable[[Command, str | None], str]
    scope: Callable[[UserRef], str]


@dataclass(frozen=True)
class Call:
    """One run of a command: by whom (`msg`, the command as a message), with what argument, written how, and
    whether the user confirmed it (only a platform's confirm button or prompt sets that, never typed text)."""

    memories: Memories
    msg: IncomingMessage
    arg: str
    dialect: Dialect
    confirmed: bool = False

    @property
    def user(self) -> UserRef:
        return self.msg.user

    def usage(self, name: str, value: str | None = None) -> str:
        """How the user types the command `name` here, as code."""
        from bot.commands.table import command_named

        return self.dialect.code(self.dialect.usage(command_named(name), value))


Handler = Callable[[Call], Awaitable[Result]]


@dataclass(frozen=True)
class Command:
    """One command of the table. `words` is what follows a platform's single command (Slack's `/memory`);
    `gated` commands store or search, so they are checked like a message (access lists, rate limit)."""

    name: str
    help: str
    run: Handler = field(repr=False)
    arg: Arg | None = None
    words: str = ""
    gated: bool = False

    def __post_init__(self) -> None:
        if not self.words:
            object.__setattr__(self, "words", self.name)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`1 memory`, `2 memories`."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def record_line(record: MemoryRecord, dialect: Dialect, number: int | None = None) -> str:
    """One memory as the lists of every command show it: number, id, text, date and where it was said."""
    when = dialect.date(record.created_at) if record.created_at else "unknown date"
    link = f" · {dialect.link(record.source.link)}" if record.source.link else ""
    start = f"{number}. " if number is not None else "• "
    return f"{start}{dialect.code(record.id)} {dialect.escape(record.shown)} · {when}{link}"
