"""One exchange queued for learning: what the write-back queue keeps about it, and how far its learning got.

The reply path queues a `QueuedExchange` (the user's text, the bot's reply, the source message); the write-back
worker records its progress in it (the passages of the message and the extracted facts, and how many of each are
stored), so a retry neither extracts again nor stores anything twice. The queue keeps it as JSON (`to_json`);
what SQL looks rows up by (the source message) is kept in columns beside it, never read from the JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from memory.records import Source


@dataclass(frozen=True, kw_only=True)
class QueuedExchange:
    """A queued exchange. `context` is the bot's message the user answered (for "it" and "that"; never a source
    of facts). `passages` and `facts` are None until worked out; `passages_stored` and `stored` count how many of
    them are stored, in order. Progress is recorded with `dataclasses.replace`."""

    text: str
    reply: str
    context: str | None = None
    user_name: str | None = None
    source: Source
    passages: list[str] | None = None
    passages_stored: int = 0
    facts: list[str] | None = None
    stored: int = 0

    def to_json(self) -> str:
        """The JSON the queue keeps; the lists (and their counters) only once worked out, as rows always had."""
        row: dict[str, Any] = {"text": self.text, "reply": self.reply, "context": self.context,
                               "user_name": self.user_name, "source": asdict(self.source)}
        if self.passages is not None:
            row.update(passages=self.passages, passages_stored=self.passages_stored)
        if self.facts is not None:
            row.update(facts=self.facts, stored=self.stored)
        return json.dumps(row)

    @classmethod
    def from_json(cls, text: str) -> QueuedExchange:
        """The exchange `to_json` (or the untyped payload before it) wrote. Raises ValueError if it is not one."""
        try:
            row = json.loads(text)
            return cls(text=str(row["text"]), reply=str(row["reply"]), context=row.get("context"),
                       user_name=row.get("user_name"), source=Source(**row["source"]),
                       passages=_strings(row.get("passages")), passages_stored=int(row.get("passages_stored", 0)),
                       facts=_strings(row.get("facts")), stored=int(row.get("stored", 0)))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a queued exchange: {type(exc).__name__}: {exc}") from exc


def _strings(value: Any) -> list[str] | None:
    return None if value is None else [str(item) for item in value]
