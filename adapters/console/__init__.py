"""The terminal chat: platform `console`, workspace `local`. Also the simplest backend for tests."""

from adapters.console.chat import ConsolePlatform, ConsoleReply, ConsoleSession

__all__ = ["ConsolePlatform", "ConsoleReply", "ConsoleSession"]
