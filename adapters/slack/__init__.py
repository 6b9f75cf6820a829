"""The Slack adapter: memorybot as a Slack app (slack-bolt `AsyncApp`, Socket Mode or HTTP mode).

`app` translates events, `reply` answers in a conversation, `commands` renders the command table (`/memory`,
buttons, the Home tab), `server` runs it all; `memorybot slack` serves `SlackPlatform`.
"""

from adapters.slack.server import SlackPlatform

__all__ = ["SlackPlatform"]
