"""Users' commands, defined once for every platform (`table.py`) and run here.

    result = await run_command(memories, access, "forget", "abc123", msg, dialect)

`run_command` is the error boundary of every command: a refused or bad request becomes a `Reply` saying so, and
anything else that goes wrong is logged (ids only) and answered with one apology. Platforms render the result.
"""

from __future__ import annotations

import logging

from bot.access import AccessPolicy
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
from bot.commands.table import COMMANDS, command_named, help_text, parse_words
from bot.errors import COMMAND_FAILED, UserError
from bot.memories import Memories
from bot.message import IncomingMessage

__all__ = [
    "COMMANDS", "Arg", "Attachment", "Command", "Confirm", "Dialect", "Reply", "Result",
    "command_named", "help_text", "parse_words", "plural", "record_line", "run_command",
]

_log = logging.getLogger(__name__)

NOT_FOR_YOU_HERE = "Sorry, I can't do that for you here."


async def run_command(memories: Memories, access: AccessPolicy | None, name: str, arg: str, msg: IncomingMessage,
                      dialect: Dialect, *, confirmed: bool = False) -> Result:
    """Run the command `name` with `arg` for the user who sent `msg` (the command as a message); `confirmed`: the
    user answered yes to the `Confirm` it returned before."""
    try:
        command = command_named(name)
    except KeyError:
        return Reply(f"I don't know that command.\n{help_text(dialect)}")
    if command.gated and access is not None:
        decision = await access.check(msg, command=True)
        if not decision.allowed:
            _log.info("refusing /%s from %s: %s", name, msg.user.key, decision.reason)
            return Reply(decision.reply or NOT_FOR_YOU_HERE)
    try:
        return await command.run(Call(memories, msg, arg.strip(), dialect, confirmed))
    except UserError as exc:
        return Reply(str(exc))
    except Exception:  # the error boundary of one command: log with ids, answer with the one apology
        _log.exception("/%s failed for %s", name, msg.user.key)
        return Reply(COMMAND_FAILED)
