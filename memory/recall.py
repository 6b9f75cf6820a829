"""Recall through several channels at once, fused by reciprocal rank.

A question finds its memories in different ways: by meaning (dense vectors), by the exact words it shares with
them (keyword search, BM25), by the names and numbers in it (entities: rare words that meaning blurs), and by the
time it names ("last month": a window over when things were said). Each channel ranks the user's memories on
its own; reciprocal-rank fusion (RRF) adds 1 / (K + rank) over the channels, so a memory that several channels
rank high comes first, and no channel's raw scores have to be made comparable. Which stores offer which channel
is up to the store (`memory/store.py`); this module holds what is common: reading the query and fusing.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from memory.records import KIND, MESSAGE

T = TypeVar("T")
Keep = Callable[[dict[str, Any]], bool]  # which stored payloads a recall may return (scope, current, unexpired)
RRF_K = 60  # the usual constant: ranks beyond ~K weigh about the same
DENSE, KEYWORD, ENTITY, TIME = "dense", "keyword", "entity", "time"
CHANNELS = (DENSE, KEYWORD, ENTITY, TIME)
MAX_TERMS = 24  # longer queries keep their first terms: a pasted log should not become a 500-term search

# Words that say nothing about which memory is meant (English, Spanish, German question and filler words).
_STOPWORDS = frozenset("""
a an the and or but of to in on at for with by from about as is are was were be been being am do does did doing
what when where who whom whose which why how that this these those it its he she they them his her their i you we
my your our me us mine yours has have had having will would can could should may might must shall not no nor
any some there here than then so if into up out over after before during just also very too really ever
don't doesn't didn't isn't aren't wasn't weren't i'm i've i'd i'll you're it's that's what's there's let's
tell remember know think say said again please thanks thank hi hello hey ok okay yes yeah anything something
el la los las un una unos unas y o de del al en con por para que qué cómo cuándo dónde quién es son fue era
mi mis tu tus su sus yo me te se lo le les nos ya muy pero sí no
der die das den dem des ein eine einen einem und oder von zu im in am an auf mit für was wie wann wo wer ist
sind war mein meine dein deine sein seine ich du er sie es wir ihr mich mir dich dir uns nicht ja nein auch
""".split())
_WORD = re.compile(r"[^\W_][\w'’-]*", re.UNICODE)


@dataclass(frozen=True)
class RecallQuery:
    """What recall searches with: the text (for meaning), its telling words, its names and numbers, and the
    time window it names (None: no time named)."""

    text: str
    terms: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    window: tuple[datetime, datetime] | None = None
    channels: frozenset[str] = field(default_factory=lambda: frozenset(CHANNELS))

    @classmethod
    def of(cls, text: str, window: tuple[datetime, datetime] | None = None,
           channels: Sequence[str] = CHANNELS) -> RecallQuery:
        return cls(text, keyword_terms(text), entity_terms(text), window, frozenset(channels))


def keyword_terms(text: str) -> tuple[str, ...]:
    """The query's words that can tell memories apart: lower case, no stop words, each once."""
    words = (w.lower().replace("’", "'") for w in _WORD.findall(text))
    kept = [w.removesuffix("'s") for w in words if len(w) > 1 and w not in _STOPWORDS]
    return tuple(dict.fromkeys(w for w in kept if w))[:MAX_TERMS]


def entity_terms(text: str) -> tuple[str, ...]:
    """Names and numbers in the query: capitalised words that are not stop words (also at a sentence's start,
    where a question about "Porto" begins with it), words in capitals, and words with digits."""
    found = []
    for word in _WORD.findall(text):
        word = word.replace("’", "'").removesuffix("'s")
        lower = word.lower()
        if len(word) < 2 or lower in _STOPWORDS:
            continue
        if word[0].isupper() or any(ch.isdigit() for ch in word):
            found.append(lower)
    return tuple(dict.fromkeys(found))[:MAX_TERMS]


def match_expression(terms: Sequence[str]) -> str | None:
    """An SQLite FTS5 query matching any of `terms` (each quoted, so no word is read as an operator)."""
    quoted = ['"' + term.replace('"', '""') + '"' for term in terms]
    return " OR ".join(quoted) or None


def fuse(rankings: dict[str, list[T]], k: int = RRF_K) -> list[T]:
    """Items ranked by reciprocal-rank fusion of the channels' rankings (best first; ties keep first-seen order)."""
    scores: dict[T, float] = defaultdict(float)
    for ranking in rankings.values():
        for rank, item in enumerate(ranking):
            scores[item] += 1.0 / (k + rank + 1)
    return sorted(scores, key=lambda item: -scores[item])


@dataclass(frozen=True)
class Hit:
    """One memory a channel found: its id, its stored payload and its cosine similarity to the query."""

    id: str
    payload: dict[str, Any]
    score: float


class UserChannels(Protocol):
    """One user's memories in scope, searchable for one query vector by each channel a store offers (a channel
    it lacks returns []). Every hit carries its cosine similarity to the query vector."""

    def dense(self, depth: int) -> list[Hit]: ...
    def keyword(self, terms: Sequence[str], depth: int) -> list[Hit]: ...
    def within(self, window: tuple[datetime, datetime], depth: int) -> list[Hit]: ...


def source_of(hit: Hit) -> tuple[str, ...]:
    """The message a memory came from: its facts and its passages share it."""
    p = hit.payload
    return (str(p.get("source_platform")), str(p.get("source_workspace")), str(p.get("source_channel")),
            str(p.get("source_message_id")))


def run_channels(user: UserChannels, query: RecallQuery, depth: int, min_score: float) -> list[Hit]:
    """Every enabled channel's top `depth`, fused by source message: a message ranks by what all its memories
    (its passages and the facts learned from it) found in every channel, and one memory of it comes first (its
    passage if found, see `_shown_first`); the other memories of a message follow once every message has had
    one (one message's facts sit close together and would otherwise fill the prompt with one message's worth).
    Dense hits below `min_score` are left out; a keyword, entity or time hit counts whatever its similarity (the
    words or the time matched)."""
    rankings: dict[str, list[tuple[str, ...]]] = {}
    by_source: dict[tuple[str, ...], list[Hit]] = {}

    def add(channel: str, found: list[Hit]) -> None:
        rankings[channel] = list(dict.fromkeys(source_of(hit) for hit in found))
        for hit in found:
            kept = by_source.setdefault(source_of(hit), [])
            if all(hit.id != other.id for other in kept):
                kept.append(hit)

    if DENSE in query.channels:
        add(DENSE, [hit for hit in user.dense(depth) if hit.score >= min_score])
    if KEYWORD in query.channels and query.terms:
        add(KEYWORD, user.keyword(query.terms, depth))
    if ENTITY in query.channels and query.entities:
        add(ENTITY, user.keyword(query.entities, depth))
    if TIME in query.channels and query.window is not None:
        add(TIME, user.within(query.window, depth))
    order = fuse(rankings)
    best = [max(by_source[source], key=_shown_first) for source in order]
    rest = [hit for source in order for hit in sorted(by_source[source], key=_shown_first, reverse=True)[1:]]
    return best + rest


def _shown_first(hit: Hit) -> tuple[bool, float]:
    """Which memory of a message comes first: the user's own words (a passage keeps the details a fact drops),
    then the most similar (NaN, unknown, last)."""
    return hit.payload.get(KIND) == MESSAGE, hit.score if hit.score == hit.score else -1.0
