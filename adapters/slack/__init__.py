"""The Slack adapter: memorybot as a Slack app (slack-bolt `AsyncApp`, Socket Mode or HTTP mode).

`app` translates events, `reply` answers in a conversation, `commands` is `/memory` and the Home tab,
`server` runs it all. `run(settings)` is the entry point of `memorybot slack`.
"""

from adapters.slack.server import run

__all__ = ["run"]
