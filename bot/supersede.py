"""Deciding whether a new fact makes an older fact about the same user untrue.

mem0 2.2.1 only adds memories, so "lives in Lisbon" and a later "moved to Porto" would both be recalled as
true. Two rules decide, both deterministic and explainable:

1. Single-valued attributes: a person has one name, one home town, one job, one diet (and pronouns, a time
   zone, a preferred language, an age). A new fact about the same attribute with another value replaces the
   old one. These facts form the user's profile (`PROFILE`), always in the prompt.
2. Negation: "The user doesn't eat meat any more" replaces "The user eats meat" (and the other way round):
   the same statement with and without a negation.

The bundled 0.5B model is not asked "does the new fact make the old one untrue": it cannot judge that reliably
(bench/README.md), and rules are predictable and explainable. Anything the rules do not cover is kept: losing
a true fact is worse than keeping an outdated one.
"""

from __future__ import annotations

import re

# attribute -> pattern whose group "value" is the attribute's value in a fact (lower-cased, "user" form)
_ATTRIBUTES: dict[str, re.Pattern[str]] = {
    "name": re.compile(r"^the user'?s (?:first |full )?name is (?:now )?(?P<value>.+)$"
                       r"|^the user (?:is (?:now )?called|goes by|wants to be called|changed (?:their|his|her) "
                       r"name to) (?P<value2>.+)$"),
    "home": re.compile(r"^the user (?:now )?(?:lives?|is living|lived|resides?|is based) in (?P<value>.+)$"
                       r"|^the user (?:has )?(?:just |recently )?(?:moved|relocated) (?:to|into) (?P<value2>.+)$"),
    "job": re.compile(r"^the user (?:now )?works? as (?P<value>.+)$"
                      r"|^the user'?s (?:new )?job is (?P<value2>.+)$"
                      r"|^the user (?:is now|became|has become) an? (?P<value3>\w+(?: \w+)?)$"),
    "diet": re.compile(r"^the user (?:is (?:now |a )?|has become (?:a )?|became (?:a )?)"
                       r"(?P<value>vegetarian|vegan|pescatarian|carnivore)$"
                       r"|^the user (?P<value2>eats? meat)$"),
    "age": re.compile(r"^the user is (?:now )?(?P<value>\d+)(?: years old)?$"),
    "language": re.compile(r"^the user'?s (?:native |first |mother |preferred |main )(?:language|tongue) is "
                           r"(?P<value>.+)$"
                           r"|^the user (?:prefers|wants) (?:to (?:talk|chat|speak) in|answers in|replies in) "
                           r"(?P<value2>.+)$"),
    "timezone": re.compile(r"^the user'?s time ?zone is (?P<value>.+)$"
                           r"|^the user is in the (?P<value2>.+?) time ?zone$"),
    "pronouns": re.compile(r"^the user'?s pronouns are (?P<value>.+)$|^the user uses (?P<value2>.+?) pronouns$"),
}
# The profile: single-valued attributes always shown to the model and listed first, in this order.
PROFILE = ("name", "pronouns", "home", "timezone", "language", "job", "diet", "age")

_NEGATION = re.compile(
    r"\b(?:no longer|not any ?more|any ?more|anymore|not|n't|never|stopped|quit|gave up)\b|n't"
)
_STOPWORDS = {"the", "user", "a", "an", "is", "does", "do", "did", "to", "of", "and", "now", "has", "have",
              "was", "be", "been", "their", "his", "her", "s", "in", "on", "at"}


# "The user is Priya." (what the bundled model writes for "I'm Priya" on some CPUs): a name only when every word
# is capitalized, and not when the last one reads as a nationality, faith or language ("The user is Brazilian"),
# which would otherwise replace the real name. Names that look like one ("Christian", "Ryan") are missed rather
# than taken: they are still learned, just not as the profile's name.
_CALLED = re.compile(r"^(?:(?i:the user is|i am|i'm) )(?:(?i:now) )?(?P<value>[A-Z][a-z]+(?:[ -][A-Z][a-z]+){0,2})$")
_NOT_NAME_ENDINGS = ("an", "ish", "ese", "ic", "ist", "ch", "iss")
_NOT_NAMES = {"greek", "thai", "hindu", "muslim", "jew", "sikh", "kiwi", "aussie", "pakistani", "iraqi", "israeli",
              "saudi", "bangladeshi", "nepali", "bengali", "punjabi", "hindi", "somali", "yemeni", "omani", "qatari",
              "kuwaiti", "filipino", "filipina", "latino", "latina", "mormon", "quaker", "inuit", "maori", "basque",
              "scots", "gay", "deaf", "blind"}

_FIRST_PERSON = [(re.compile(r"^(?:i am|i'm) "), "the user is "), (re.compile(r"^i "), "the user "),
                 (re.compile(r"^my "), "the user's ")]


def _normal(fact: str) -> str:
    """Lower case, no final stop, and first person ("I live", as said to /remember) as "the user"."""
    text = re.sub(r"\s+", " ", fact.lower().replace("’", "'")).strip().rstrip(".!")
    for pattern, replacement in _FIRST_PERSON:
        text = pattern.sub(replacement, text)
    return text


def attribute(fact: str) -> tuple[str, str] | None:
    """(attribute, value) if the fact states a single-valued attribute, else None."""
    text = _normal(fact)
    for name, pattern in _ATTRIBUTES.items():
        match = pattern.match(text)
        if match:
            value = next(v for v in match.groups() if v)
            return name, value.strip()
    called = _CALLED.match(re.sub(r"\s+", " ", fact.replace("’", "'")).strip().rstrip(".!"))
    if called:
        last = called["value"].lower().split()[-1]
        if last not in _NOT_NAMES and not last.endswith(_NOT_NAME_ENDINGS):
            return "name", called["value"].lower()
    return None


def profile_attribute(fact: str) -> str | None:
    """The profile attribute (one of `PROFILE`) the fact fills, or None."""
    found = attribute(fact)
    return found[0] if found and found[0] in PROFILE else None


def _stem(word: str) -> str:
    for suffix in ("ing", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _content(text: str) -> set[str]:
    return {_stem(w) for w in re.findall(r"[a-z]+", text) if w not in _STOPWORDS}


def _negated(text: str) -> bool:
    return bool(_NEGATION.search(text))


def replaces(new: str, old: str) -> bool:
    """Whether `new` makes `old` untrue (see the module docstring for the rules)."""
    new_attr, old_attr = attribute(new), attribute(old)
    if new_attr and old_attr and new_attr[0] == old_attr[0]:
        return new_attr[1] != old_attr[1]
    new_text, old_text = _normal(new), _normal(old)
    if _negated(new_text) == _negated(old_text):
        return False
    stripped_new = _content(_NEGATION.sub(" ", new_text))
    stripped_old = _content(_NEGATION.sub(" ", old_text))
    if not stripped_new or not stripped_old:
        return False
    overlap = len(stripped_new & stripped_old) / len(stripped_new | stripped_old)
    return overlap >= 0.6


def replaced(old: list[str], new: str) -> list[int]:
    """Indexes into `old` of the facts that `new` makes untrue."""
    return [i for i, fact in enumerate(old) if replaces(new, fact)]
