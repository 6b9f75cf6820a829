"""Turning one user message into short standalone facts about the user, with the local model.

Only the user's own words are a source of facts: the bot's message before them is context for "it" and
"that", and the bot's reply is never read. A short prompt asks for `{"facts": [...]}`; the answer is validated
against a JSON schema and retried once with a firmer instruction. Messages that surely hold no fact (only
questions, no words) never reach the model; a fact whose words the message does not hold is dropped. What
still does not parse raises `ExtractionError` (the caller logs it with the raw output); it never turns
silently into "no facts".
"""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import datetime

import jsonschema

from bot import supersede
from bot.dates import resolve_relative_dates
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

SYSTEM_PROMPT = """You extract lasting facts about the user from the user's message, for a memory.
Reply with JSON only: {"facts": ["...", "..."]}.
Write one fact for each thing the message says about the user: name, home, work, family and friends, pets,
health, diet, likes and dislikes, plans, and what they did or what happened to them. A message often says
several things: write a fact for each. Each fact is one short sentence that stands alone and starts with
"The user" (in the message's own language if it is not English). Copy names, places and dates exactly.
Only the user's own words are facts: the assistant's words before them only explain "it" or "that".
Greetings, small talk, questions and requests are not facts: reply {"facts": []}."""

# Short, plain examples: the small model copies rich ones (a nurse in Leeds with two cats) into the facts it
# extracts from unrelated messages, inventing memories. Every example's words are ones a real message would not
# share by chance, and the grounding check drops a fact whose words are not in the message, so a copied example
# is not kept.
EXAMPLES = [
    ("I'm Sam and I play the violin. We moved to Oslo in 2019 with my wife Ines.",
     '{"facts": ["The user\'s name is Sam.", "The user plays the violin.", "The user moved to Oslo in 2019.", '
     '"The user\'s wife is Ines."]}'),
    ("hey, how are you today?", '{"facts": []}'),
    ("what's my name again, and where did I say I work?", '{"facts": []}'),
    ("Me llamo Lucía y trabajo de enfermera.",
     '{"facts": ["El usuario se llama Lucía.", "El usuario trabaja de enfermera."]}'),
    ("Ich wohne in Bremen und trinke keinen Tee.",
     '{"facts": ["Der Nutzer wohnt in Bremen.", "Der Nutzer trinkt keinen Tee."]}'),
    ("Assistant: Do you still have the old Vespa?\nUser: yes, and I ride it every day",
     '{"facts": ["The user has an old Vespa.", "The user rides the Vespa every day."]}'),
    # last, so a fact wrapped in a request is still seen as a fact (placed last it works best; bench/README.md)
    ("My dog Biscuit hates baths, so please don't suggest a groomer.",
     '{"facts": ["The user has a dog named Biscuit.", "The user\'s dog Biscuit hates baths."]}'),
]
CONTEXT_NOTE = "Assistant: {context}\nUser: {text}"
MAX_CONTEXT_CHARS = 300  # the end of the assistant's message: what the user most likely answers

# Words that carry no fact of their own: a fact needs other words that the message itself contains.
_GENERIC = frozenset("""
a an the and or but of to in on at for with from by as is are was were be been being am has have had do does
did not no user user's users their his her they them it its this that these those there here now also very
really just so name named called likes like loves love enjoys enjoy prefers prefer wants want lives live works
work working job has having own owns is's s will would can could should one some any more most about into
year years old age aged go goes going by
el la los las un una usuario usuaria de del en y que se es su der die das ein eine nutzer benutzer und ist
""".split())
# How a fact names the user, in the languages the examples show and their neighbours.
_SUBJECTS = ("the user", "el usuario", "la usuaria", "der nutzer", "die nutzerin", "der benutzer",
             "die benutzerin", "l'utilisateur", "l’utilisateur", "o usuário", "a usuária", "l'utente")
_QUESTION_START = re.compile(
    r"^(?:what|what's|whats|where|where's|who|who's|whom|when|why|how|how's|which|can|could|do|does|did|is|are|"
    r"was|were|will|would|should|shall|have|has|may|might|am|any|if|qué|que|dónde|donde|quién|cuándo|cómo|por qué|"
    r"puedes|sabes|was|wo|wer|wann|warum|wie|welche|kannst|weißt|hast|bist|ist|sind)\b",
    re.IGNORECASE,
)
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
_CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.DOTALL)
# Facts about the message rather than the user ("The user's message says ...", "The user asks ...").
_ABOUT_THE_MESSAGE = re.compile(r"^the user(?:'s)? (?:message|says|said|asks|asked|is asking|wants to know|"
                                r"would like to know|writes|wrote|mentions|mentioned|thanks)\b|`|\b\w+_\w+\b",
                                re.IGNORECASE)  # (backticks and snake_case names: a remark about code)
# How people say their own name; a "name is X" fact needs one of these before X in the message.
_SELF_NAMING = (r"(?:i'm|i am|im|i’m|my name is|my name's|name's|call me|it's|this is|go by|me llamo|mi nombre es|"
                r"soy|ich heiße|ich heisse|ich bin|mein name ist|nennt mich|je m'appelle|je suis)")
# Clauses and the words that start them: who a clause is about.
_CLAUSES = re.compile(r"[,.;:!?()]+|\s(?:and|but|so|because|y|pero|und|aber|weil)\s", re.IGNORECASE)
_FIRST_PERSON = frozenset("i i'm im i've i'd i'll i’m we we're we've yo ich wir me".split())
_THIRD_PERSON = frozenset("you you're youre your you've you'll he she they it he's she's they're his her their my "
                          "our that that's this it's there there's someone "
                          "somebody everyone apparently mi mis su sus él ella mein meine meinen sein seine ihr "
                          "ihre er es".split())


MIN_MESSAGE_CHARS = 200  # a message is never cut shorter than this to fit the extraction prompt
RETRY_NOTE = 'Your last answer was not valid. Answer with one JSON object like {"facts": []} and nothing else.'


class ExtractionError(ValueError):
    """The model's answer was not valid JSON of the expected shape, even after a retry."""

    def __init__(self, message: str, raw: str) -> None:
        super().__init__(message)
        self.raw = raw


def build_messages(user_text: str, context: str | None = None) -> list[ChatMessage]:
    """The extraction prompt: instructions, the examples, then the message (after the assistant's words it
    answers, if any). The prompt does not change from one message to the next until the message itself, so a
    backend that reuses prompt starts (llama.cpp) processes only the message."""
    messages = [ChatMessage("system", SYSTEM_PROMPT)]
    for said, answer in EXAMPLES:
        messages += [ChatMessage("user", said), ChatMessage("assistant", answer)]
    if context:
        user_text = CONTEXT_NOTE.format(context=context, text=user_text)
    messages.append(ChatMessage("user", user_text))
    return messages


def _words(text: str) -> set[str]:
    return {w.rstrip("s") for w in re.findall(r"\w+", text.lower()) if w not in _GENERIC}


def grounded(fact: str, message: str, user_name: str | None = None, context: str | None = None) -> bool:
    """Whether the fact is about the user ("The user ...", its translation, or their name) and comes from the
    message: most of its telling words appear there, and every name and number in it does.

    With `context` (the bot's words the user answered), a name or word the user refers to ("yes, I loved it")
    may come from there, but at least one telling word that is not a name must be the user's own: the user
    said something about it, not only the bot. Resolved dates ("7 May 2023" for "yesterday") count as
    appearing, so the date words are left out.
    """
    lowered = fact.lower()
    if not any(subject in lowered for subject in _SUBJECTS) and not (user_name and user_name.lower() in lowered):
        return False
    telling = _words(fact) - _DATE_WORDS
    if not telling:
        return False
    own = _words(message)
    said = own | _words(context or "")
    names = _names(fact, user_name)
    if not names <= said:  # a name or number nobody said is made up
        return False
    if context and not any(_said(word, own) for word in telling - names):
        return False
    return sum(_said(word, said) for word in telling) * 2 > len(telling)


def about_the_user(fact: str, message: str) -> bool:
    """Whether a grounded fact says something the user said of themselves: not a remark about the message
    ("The user asks ..."), not a name the message gives someone else, and not what the message says another
    person ("my sister", "he") did, made into "The user ..."."""
    if _ABOUT_THE_MESSAGE.search(fact) or re.search(r"\bthe user\b", message, re.IGNORECASE) or "@" in fact:
        return False  # (people do not call themselves "the user": such a message dictates facts to the bot)
    found = supersede.attribute(fact)
    if found and found[0] == "name":
        return re.search(rf"\b{_SELF_NAMING}\s+{re.escape(found[1])}\b", message.lower()) is not None
    clauses = _best_clause(fact, message)
    if clauses and _QUESTION_START.match(clauses[-1]):  # "since I'm vegan, what can I cook?": not a statement
        return False
    if possessed := re.match(r"^the user'?s (\w+)", fact.lower()):  # "The user's sister ...": is it the user's?
        relation = _words(possessed[1])
        return not relation or any(_said(word, _words(message)) for word in relation)
    return _subject_of(clauses) != "other"


def _best_clause(fact: str, message: str) -> list[str]:
    """The message's clauses up to (and with) the one sharing most telling words with the fact."""
    clauses = [c.strip() for c in _CLAUSES.split(message) if c and c.strip()]
    telling = _words(fact) - _DATE_WORDS
    overlap = [sum(_said(w, telling) for w in _words(c)) for c in clauses]
    best = max(range(len(clauses)), key=lambda i: (overlap[i], -i)) if clauses else 0
    return clauses[: best + 1]


def _subject_of(clauses: list[str]) -> str:
    """"self" or "other" for the last clause, from its first pronoun or determiner ("lol that's ..." is about
    "that") or, for a clause without one ("... and speaks four languages"), the nearest clause before it that
    has one; "unknown" without any."""
    for clause in reversed(clauses):
        for word in clause.lower().replace("’", "'").split():
            if word in _FIRST_PERSON:
                return "self"
            if word in _THIRD_PERSON:
                return "other"
    return "unknown"


def _said(word: str, said: set[str]) -> bool:
    """Whether the message has `word` or another form of it ("painted" / "painting", "vive" / "vivo"): a
    shared start of all but the last three letters (at least three)."""
    if word in said:
        return True
    return any(len(os.path.commonprefix([word, other])) >= max(3, min(len(word), len(other)) - 3) for other in said)


def _names(fact: str, user_name: str | None) -> set[str]:
    """Capitalised words (past the first) and numbers of a fact, as `_words` writes them; dates excluded."""
    words = re.findall(r"\w+", fact)[1:]
    names = {w for w in words if w[0].isupper() or w.isdigit()} - set((user_name or "").split())
    return _words(" ".join(names)) - _DATE_WORDS - {"user"}


def states_nothing(text: str) -> bool:
    """Whether a message surely holds no fact: no letters at all (emoji, numbers), or only questions."""
    if not re.search(r"[^\W\d_]", text):
        return True
    sentences = [s.strip() for s in _SENTENCES.split(text) if s.strip()]
    return bool(sentences) and all(s.endswith("?") and _QUESTION_START.match(s.lstrip("¿¡")) for s in sentences)


# Words of the dates `resolve_relative_dates` writes (English, Spanish, German).
_DATE_WORDS = frozenset(
    "january february march april may june july august september october november december monday tuesday "
    "wednesday thursday friday saturday sunday week weekend morning afternoon evening night summer winter "
    "spring autumn fall enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre "
    "diciembre semana fin mañana tarde noche januar februar märz mai juni juli oktober dezember woche "
    "wochenende morgen abend nacht jahr vom".split()
) | {str(n) for n in range(1, 32)} | {str(y) for y in range(1950, 2100)}


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
                      context: str | None = None, preemptible: bool = True) -> list[str]:
        """Facts about the user in `user_text`, said at `said_at`. `context` is the bot's message the user
        answered: it helps read "it" and "that" and is never a source of facts. Raises `Preempted` if a reply
        needs the model (unless not `preemptible`), `ExtractionError` if the answer is invalid.

        Relative dates are resolved against `said_at` before the model reads the message (and again in its
        facts); code blocks are left out. Facts whose words are not in the message (the model making things
        up, or repeating the bot) are dropped and logged.
        """
        text = resolve_relative_dates(_CODE_BLOCK.sub(" [code] ", user_text), said_at).strip()
        if states_nothing(text):
            return []
        context = context[-MAX_CONTEXT_CHARS:] if context else None  # what the model sees is what grounds
        facts = await self._answer(text, context, preemptible)
        kept = [fact for fact in facts if grounded(fact, text, user_name, context) and about_the_user(fact, text)]
        if len(kept) < len(facts):  # the facts' text only at DEBUG: logs should not hold what users said
            _log.info("dropped %d fact(s) not found in the message", len(facts) - len(kept))
            _log.debug("dropped facts: %r", [f for f in facts if f not in kept])
        return [resolve_relative_dates(fact, said_at) for fact in kept]

    def _fitted(self, user_text: str, context: str | None) -> list[ChatMessage]:
        """The extraction prompt, the message cut until it leaves room for an answer and one retry."""
        room = self._model.context_tokens - 2 * self._params.max_new_tokens - self._model.count_tokens(RETRY_NOTE)
        while True:
            messages = build_messages(user_text, context)
            if self._model.prompt_tokens(messages) <= room or len(user_text) <= MIN_MESSAGE_CHARS:
                return messages
            user_text = user_text[: max(MIN_MESSAGE_CHARS, int(len(user_text) * 0.8))]

    async def _answer(self, user_text: str, context: str | None, preemptible: bool) -> list[str]:
        messages = self._fitted(user_text, context)
        raw = await self._model.generate(messages, self._params, background=True, preemptible=preemptible)
        try:
            return parse_facts(raw)
        except ExtractionError as first:
            _log.info("extraction answer invalid (%s), retrying once", first)
        messages += [ChatMessage("assistant", raw), ChatMessage("user", RETRY_NOTE)]
        raw = await self._model.generate(messages, self._params, background=True, preemptible=preemptible)
        return parse_facts(raw)
