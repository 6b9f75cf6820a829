"""Turning one exchange into short standalone facts about the user, with the local model.

A short prompt asks for `{"facts": [...]}`; the answer is validated against a JSON schema and retried
once with a firmer instruction. Small talk yields no facts. What still does not parse raises
`ExtractionError` (the caller logs it with the raw output); it never turns silently into "no facts".
"""

from __future__ import annotations

import json
import logging
import re
from datetime import date, datetime, timedelta

import jsonschema

from bot.llm.base import ChatMessage, GenerationParams
from bot.llm.runner import LocalModel
from bot.text import strip_reasoning

_log = logging.getLogger(__name__)

MAX_FACTS = 8
MAX_FACT_CHARS = 300

FACTS_SCHEMA = {
    "type": "object",
    "properties": {
        "facts": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_FACT_CHARS},
            "maxItems": MAX_FACTS,
        }
    },
    "required": ["facts"],
}

SYSTEM_PROMPT = """You extract lasting facts about the user from their message, for a memory.
Reply with JSON only: {"facts": ["...", "..."]}.
Only write facts that this message states. Each fact is one short sentence that stands alone, about the
user, starting with "The user". Keep names, places, dates, preferences, plans, people, work, pets and hobbies.
Write dates as full dates; today is {today}.
Greetings, small talk, questions and requests are not facts: reply {"facts": []}."""

# Short, plain examples: the small model copied richer ones (a nurse in Leeds with two cats) into a fifth of
# the facts it extracted from unrelated messages in the LoCoMo benchmark.
EXAMPLES = [
    ("I'm Sam and I play the violin.",
     '{"facts": ["The user\'s name is Sam.", "The user plays the violin."]}'),
    ("hey, how are you today?", '{"facts": []}'),
    ("can you explain how rainbows form?", '{"facts": []}'),
    # last, so a fact wrapped in a request is still seen as a fact (measured: 5 of 5 such messages, not 3)
    ("I'm allergic to nuts, so please don't suggest recipes with them.",
     '{"facts": ["The user is allergic to nuts."]}'),
]

# Words that carry no fact of their own: a fact needs other words that the message itself contains.
_GENERIC = frozenset("""
a an the and or but of to in on at for with from by as is are was were be been being am has have had do does
did not no user user's users their his her they them it its this that these those there here now also very
really just so name named called likes like loves love enjoys enjoy prefers prefer wants want lives live works
work working job has having own owns is's s will would can could should one some any more most about into
""".split())

MIN_MESSAGE_CHARS = 200  # a message is never cut shorter than this to fit the extraction prompt
RETRY_NOTE = 'Your last answer was not valid. Answer with one JSON object like {"facts": []} and nothing else.'


class ExtractionError(ValueError):
    """The model's answer was not valid JSON of the expected shape, even after a retry."""

    def __init__(self, message: str, raw: str) -> None:
        super().__init__(message)
        self.raw = raw


def build_messages(user_text: str, today: datetime) -> list[ChatMessage]:
    messages = [ChatMessage("system", SYSTEM_PROMPT.replace("{today}", today.strftime("%A, %d %B %Y")))]
    for said, answer in EXAMPLES:
        messages += [ChatMessage("user", said), ChatMessage("assistant", answer)]
    messages.append(ChatMessage("user", user_text))
    return messages


def _words(text: str) -> set[str]:
    return {w.rstrip("s") for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _GENERIC}


def grounded(fact: str, message: str, user_name: str | None = None) -> bool:
    """Whether the fact is about the user ("The user ..." or their name) and comes from the message: most of its
    telling words appear there.

    Resolved dates ("7 May 2023" for "yesterday") count as appearing, so the date words are left out.
    """
    lowered = fact.lower()
    if "the user" not in lowered and not (user_name and user_name.lower() in lowered):
        return False
    telling = _words(fact) - _DATE_WORDS
    if not telling:
        return False
    found = telling & _words(message)
    return len(found) * 2 > len(telling)


_DATE_WORDS = frozenset(
    "january february march april may june july august september october november december monday tuesday "
    "wednesday thursday friday saturday sunday".split()
) | {str(n) for n in range(1, 32)} | {str(y) for y in range(1950, 2100)}


_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def resolve_dates(fact: str, said_at: datetime) -> str:
    """Replace relative times ("yesterday", "last year") with the dates they meant when the message was said.

    The small model does not do this reliably itself, and a memory read months later needs the real date.
    """
    day = said_at.date()

    def on(d: date) -> str:
        return f"on {d.day} {d:%B %Y}"

    rules: list[tuple[str, str]] = [
        (r"\byesterday\b", on(day - timedelta(days=1))),
        (r"\b(?:today|tonight|this morning|this evening)\b", on(day)),
        (r"\btomorrow\b", on(day + timedelta(days=1))),
        (r"\blast week\b", f"in the week before {day.day} {day:%B %Y}"),
        (r"\bnext week\b", f"in the week after {day.day} {day:%B %Y}"),
        (r"\blast month\b", f"in {(day.replace(day=1) - timedelta(days=1)):%B %Y}"),
        (r"\bnext month\b", f"in {(day.replace(day=28) + timedelta(days=4)):%B %Y}"),
        (r"\bthis month\b", f"in {day:%B %Y}"),
        (r"\blast year\b", f"in {day.year - 1}"),
        (r"\bnext year\b", f"in {day.year + 1}"),
        (r"\bthis year\b", f"in {day.year}"),
    ]
    for pattern, replacement in rules:
        fact = re.sub(pattern, replacement, fact, flags=re.IGNORECASE)
    for i, name in enumerate(_WEEKDAYS):
        back = (day.weekday() - i) % 7 or 7
        fact = re.sub(rf"\blast {name}\b", on(day - timedelta(days=back)), fact, flags=re.IGNORECASE)
    return fact


def parse_facts(raw: str) -> list[str]:
    """Validate the model's answer; return cleaned, de-duplicated facts."""
    text = strip_reasoning(raw)
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ExtractionError("no JSON object in the answer", raw)
    try:
        data = json.loads(text[start : end + 1])
        jsonschema.validate(data, FACTS_SCHEMA)
    except (json.JSONDecodeError, jsonschema.ValidationError) as exc:
        raise ExtractionError(f"invalid answer: {str(exc).splitlines()[0]}", raw) from None
    facts: list[str] = []
    seen: set[str] = set()
    for fact in data["facts"]:
        fact = " ".join(fact.split())
        if fact and fact.lower() not in seen:
            seen.add(fact.lower())
            facts.append(fact)
    return facts


class FactExtractor:
    def __init__(self, model: LocalModel, max_new_tokens: int = 160) -> None:
        self._model = model
        self._params = GenerationParams(
            max_new_tokens=max_new_tokens, temperature=0.0, repetition_penalty=1.0, json_schema=FACTS_SCHEMA
        )

    async def extract(self, user_text: str, said_at: datetime, user_name: str | None = None, *,
                      preemptible: bool = True) -> list[str]:
        """Facts in `user_text`. Raises `Preempted` if a reply needs the model (unless not `preemptible`),
        `ExtractionError` if the answer is invalid.

        Facts whose words are not in the message (the model making things up) are dropped and logged.
        """
        facts = await self._answer(user_text, said_at, preemptible)
        kept = [fact for fact in facts if grounded(fact, user_text, user_name)]
        if len(kept) < len(facts):  # the facts' text only at DEBUG: logs should not hold what users said
            _log.info("dropped %d fact(s) not found in the message", len(facts) - len(kept))
            _log.debug("dropped facts: %r", [f for f in facts if f not in kept])
        return [resolve_dates(fact, said_at) for fact in kept]

    def _fitted(self, user_text: str, said_at: datetime) -> list[ChatMessage]:
        """The extraction prompt, the message cut until it leaves room for an answer and one retry."""
        room = self._model.context_tokens - 2 * self._params.max_new_tokens - self._model.count_tokens(RETRY_NOTE)
        while True:
            messages = build_messages(user_text, said_at)
            if self._model.prompt_tokens(messages) <= room or len(user_text) <= MIN_MESSAGE_CHARS:
                return messages
            user_text = user_text[: max(MIN_MESSAGE_CHARS, int(len(user_text) * 0.8))]

    async def _answer(self, user_text: str, said_at: datetime, preemptible: bool) -> list[str]:
        messages = self._fitted(user_text, said_at)
        raw = await self._model.generate(messages, self._params, background=True, preemptible=preemptible)
        try:
            return parse_facts(raw)
        except ExtractionError as first:
            _log.info("extraction answer invalid (%s), retrying once", first)
        messages += [ChatMessage("assistant", raw), ChatMessage("user", RETRY_NOTE)]
        raw = await self._model.generate(messages, self._params, background=True, preemptible=preemptible)
        return parse_facts(raw)
