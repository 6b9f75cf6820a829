"""The bot's error hierarchy, and the fixed apologies users get when something fails on the bot's side.

`UserError` carries a one-line message meant for the user. Anything else is logged (with ids, never what users
said) and answered with one of the apologies below, the same on every platform.
"""

REPLY_FAILED = "Sorry, something went wrong while I was answering. Please try again in a moment."
COMMAND_FAILED = "Sorry, something went wrong with that command. Please try again later."


class BotError(Exception):
    """Base of memorybot's own errors."""


class UserError(BotError):
    """Bad input from a user (unknown id, empty text, ...); `str(error)` is what to tell them."""
