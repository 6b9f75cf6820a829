"""Turning one exchange into short standalone facts about the user, with the local model.

A short prompt asks for `{"facts": [...]}`; the answer is validated against a JSON schema and retried
once with a firmer instruction. Small talk yields no facts. What still does not parse raises
`ExtractionError` (the caller logs it with the raw output); it never turns silently into "no facts".
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

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
Each fact is one short sentence that stands alone, about the user, starting with "The user".
Keep names, places, dates, preferences, plans, people, work, pets and hobbies.
Write dates as full dates; today is {today}.
Greetings, small talk, questions and requests are not facts: reply {"facts": []}."""

EXAMPLES = [
    ("I'm Sam, I work as a nurse in Leeds and I have two cats.",
     '{"facts": ["The user\'s name is Sam.", "The user works as a nurse.", "The user lives in Leeds.", '
     '"The user has two cats."]}'),
    ("hey, how are you today?", '{"facts": []}'),
]

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

    async def extract(self, user_text: str, said_at: datetime) -> list[str]:
        """Facts in `user_text`. Raises `Preempted` if a reply needs the model, `ExtractionError` if invalid."""
        messages = build_messages(user_text, said_at)
        raw = await self._model.generate(messages, self._params, background=True)
        try:
            return parse_facts(raw)
        except ExtractionError as first:
            _log.info("extraction answer invalid (%s), retrying once", first)
        messages += [ChatMessage("assistant", raw), ChatMessage("user", RETRY_NOTE)]
        raw = await self._model.generate(messages, self._params, background=True)
        return parse_facts(raw)
