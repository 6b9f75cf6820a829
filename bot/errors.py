"""The bot's error hierarchy. `UserError` carries a one-line message meant for the user."""


class BotError(Exception):
    """Base of memorybot's own errors."""


class UserError(BotError):
    """Bad input from a user (unknown id, empty text, ...); `str(error)` is what to tell them."""
