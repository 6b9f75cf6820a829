"""What the memory store holds: a fact about one user and the source it was learned from."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Source:
    """Provenance of a memory: where and when it was said, and how it got stored.

    `origin` is "extracted" (learned from a conversation) or "explicit" (the user asked to remember it).
    `private` marks facts learned in a direct message: they are recalled in direct messages only.
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
        return {f"source_{k}": v for k, v in asdict(self).items()}

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


@dataclass(frozen=True)
class MemoryRecord:
    """One stored fact about a user. `score` is set on search results only; `superseded_by` names
    the newer fact that replaced this one (it is then kept for history, not recalled)."""

    id: str
    text: str
    created_at: datetime | None
    updated_at: datetime | None
    source: Source
    score: float | None = None
    superseded_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "source": asdict(self.source),
            **({"score": self.score} if self.score is not None else {}),
            **({"superseded_by": self.superseded_by} if self.superseded_by else {}),
        }
