"""What the memory store holds: facts about one user and the user's own messages, each with the source it came
from.

Two kinds of memory share one store, one identity and one provenance: a `fact` is a short standalone statement
learned from what the user said (or asked the bot to remember); a `message` is a passage of the user's own words,
kept as said (episodic memory), so that nothing the extractor missed is lost to recall.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Source:
    """Provenance of a memory: where and when it was said, and how it got stored.

    `origin` is "extracted" (learned from a conversation: a fact or the message itself) or "explicit" (the user
    asked to remember it). `private` marks memories from a direct message: they are recalled in direct messages
    only.
    """

    platform: str
    workspace: str
    channel: str
    message_id: str
    link: str | None
    time: str
    origin: str = "extracted"
    private: bool = False

    def to_metadata(self) -> dict[str, Any]:
        """The source as payload fields, with when it was said as POSIX seconds (for the time channel)."""
        fields: dict[str, Any] = {f"source_{k}": v for k, v in asdict(self).items()}
        try:
            fields[SOURCE_TS] = datetime.fromisoformat(self.time).timestamp()
        except ValueError:
            pass
        return fields

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> Source:
        return cls(
            platform=str(metadata.get("source_platform", "")),
            workspace=str(metadata.get("source_workspace", "")),
            channel=str(metadata.get("source_channel", "")),
            message_id=str(metadata.get("source_message_id", "")),
            link=metadata.get("source_link"),
            time=str(metadata.get("source_time", "")),
            origin=str(metadata.get("source_origin", "extracted")),
            private=bool(metadata.get("source_private", False)),
        )


FACT = "fact"
MESSAGE = "message"
KINDS = (FACT, MESSAGE)

# Payload keys memorybot writes beside the source (mem0 keeps metadata at the top level of a point's payload).
KIND = "kind"  # FACT or MESSAGE; memories stored before messages were kept had none (see MemoryStore.upgrade)
ATTRIBUTE = "attribute"  # the profile entry a fact fills
PASSAGE = "passage"  # a message passage's place in its message (0, 1, ...)
SOURCE_TS = "source_ts"  # when the source was said, POSIX seconds: the time channel filters on it
SUPERSEDED_BY = "superseded_by"


@dataclass(frozen=True)
class MemoryRecord:
    """One stored memory of a user: a fact or a passage of their message (`kind`). `score` is set on search
    results only; `superseded_by` names the newer fact that replaced this one (it is then kept for history, not
    recalled); `attribute` names the profile entry a fact fills (name, home, job...; see `bot/supersede.py`)."""

    id: str
    text: str
    created_at: datetime | None
    updated_at: datetime | None
    source: Source
    score: float | None = None
    superseded_by: str | None = None
    kind: str = FACT
    attribute: str | None = None

    @property
    def is_message(self) -> bool:
        return self.kind == MESSAGE

    @property
    def shown(self) -> str:
        """The memory as listed to its user: a fact as it is, a passage of their message quoted."""
        return f'You said: "{self.text}"' if self.is_message else self.text

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "kind": self.kind,
            **({"attribute": self.attribute} if self.attribute else {}),
            "source": asdict(self.source),
            **({"score": self.score} if self.score is not None else {}),
            **({"superseded_by": self.superseded_by} if self.superseded_by else {}),
        }
