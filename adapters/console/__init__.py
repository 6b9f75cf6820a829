"""The terminal chat: platform `console`, workspace `local`. Also the simplest backend for tests."""

from adapters.console.chat import ConsoleReply, run_chat

__all__ = ["ConsoleReply", "run_chat"]
