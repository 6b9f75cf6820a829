"""Relative times, pinned to the calendar: "yesterday" in a message becomes the date it meant when it was said,
and "what did I say last week?" becomes the stretch of time a recall should look in.

Two pure functions, hand-written rules, no model, no I/O: cheap enough to run on every message. (Not dateparser's
search_dates: it is far slower, gives no granularity, reads ordinary words as dates ("May I ask", "a dog named
Sunday") and misses Spanish and German expressions such as "la semana que viene" and "vorige Woche"; see
bench/README.md.)

- `resolve_relative_dates(text, said_at)` rewrites English, Spanish and German relative expressions in the text's
  own language ("on 21 March 2026", "el 21 de marzo de 2026", "am 21. März 2026");
- `time_window(question, now)` returns the [start, end) a question names, or None.

The rules for the ambiguous cases (each has a test):
- "this Saturday" is the coming one within 0-6 days (today included); "last Saturday" the most recent one before
  today; English "next Saturday" the one in next Monday-to-Sunday week (said on a Thursday: 9 days on), but Spanish
  "el próximo sábado" and German "nächsten Samstag" the coming one (1-7 days on), as they are mostly meant.
  "on Saturday" alone: the last one in a past-tense clause, else the coming one (1-7 days on); a bare "Saturday"
  is left alone. Weeks run Monday to Sunday; a weekend is named by its Saturday.
- "in December" without a year: the next December (this month included), unless its clause is in the past tense
  ("went", "was", "-ed" verbs...) and has no future word ("will", "going to"...), then the most recent one; left
  alone where it recurs or names no one year ("born in May", "my birthday is in June", "usually in July").
  "last December" is the most recent before this month, "next December" the first after it.
  "in N days/weeks/..." in a past-tense clause is a duration ("lost 5 kg in 3 months") and stays.
- Seasons are northern and meteorological (summer = June-August); "next summer" is the first not yet begun,
  "last summer" the latest already over, "this summer" the current one, else the next if it begins within half
  a year, else the last (said in March: "this fall" is 2026, "this winter" the one just over).
- "N weeks ago" / "in N weeks" name that whole week; "a few days ago" is left alone; "a couple of" is 2.
- Possessives ("today's", "last year's") are left alone: "today's" is as often "today is". An English subject
  loses its preposition: "last year was hard" -> "2025 was hard".
- Spanish "en N días" can be a duration, so only "dentro de N días" is resolved; seasons and bare month names are
  resolved in English only.
- time_window: only past or present windows (it narrows recall by when things were said, so "next week" gives
  None); "in May" is the most recent May not after now; "on Monday" the most recent Monday before today;
  "N weeks ago" that whole week; "recently" / "lately" the last 14 days, today included.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

__all__ = ["resolve_relative_dates", "time_window"]


@dataclass(frozen=True)
class _Span:
    """A stretch of the calendar that an expression names: one day, week, weekend, month, year or season."""

    unit: str  # day, week, weekend, month, year, season, recent (14 days)
    start: date
    part: str = ""  # part of the day ("evening"), a month's qualifier ("early "), or a season's name

    @property
    def end(self) -> date:
        days = {"day": 1, "week": 7, "weekend": 2, "recent": 14}
        if self.unit in days:
            return self.start + timedelta(days=days[self.unit])
        return _month_start(self.start, {"month": 1, "season": 3, "year": 12}[self.unit])


_Handler = Callable[[re.Match[str], date], _Span | None]


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    lang: str
    handler: _Handler
    words: frozenset[str]  # one of them is in every match


@dataclass(frozen=True)
class _Found:
    start: int
    end: int
    span: _Span
    lang: str


# --- vocabulary -------------------------------------------------------------------------------------------------

_EN_MONTHS = "January February March April May June July August September October November December".split()
_ES_MONTHS = "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre".split()
_DE_MONTHS = "Januar Februar März April Mai Juni Juli August September Oktober November Dezember".split()
_MONTH_INDEX = {name.lower(): i for names in (_EN_MONTHS, _ES_MONTHS, _DE_MONTHS) for i, name in enumerate(names)}
_MONTH_INDEX.update({"setiembre": 8, "jänner": 0, "maerz": 2})

_WEEKDAY_INDEX = {name: i % 7 for i, name in enumerate(
    "monday tuesday wednesday thursday friday saturday sunday "
    "lunes martes miércoles jueves viernes sábado domingo "
    "montag dienstag mittwoch donnerstag freitag samstag sonntag".split())}
_WEEKDAY_INDEX.update({"miercoles": 2, "sabado": 5, "sonnabend": 5})

_NUMBERS = {word: i % 12 + 1 for i, word in enumerate(
    "one two three four five six seven eight nine ten eleven twelve "
    "uno dos tres cuatro cinco seis siete ocho nueve diez once doce "
    "ein zwei drei vier fünf sechs sieben acht neun zehn elf zwölf".split())}
_NUMBERS.update({"a": 1, "an": 1, "un": 1, "una": 1, "eine": 1, "einem": 1, "einen": 1, "einer": 1})

# "May" only capitalized: "this may take a while", "next may be".
_EN_MON = r"(?P<mon>january|february|march|april|(?-i:May)|june|july|august|september|october|november|december)"
_ES_MON = r"(?P<mon>enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|setiembre|octubre|noviembre" \
          r"|diciembre)"
_DE_MON = r"(?P<mon>januar|jänner|februar|märz|maerz|april|mai|juni|juli|august|september|oktober|november|dezember)"
_EN_WD = r"(?P<wd>monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_ES_WD = r"(?P<wd>lunes|martes|mi[ée]rcoles|jueves|viernes|s[áa]bado|domingo)"
_DE_WD = r"(?P<wd>montag|dienstag|mittwoch|donnerstag|freitag|samstag|sonnabend|sonntag)"
_EN_N = r"(?P<n>\d{1,3}|a\s+couple\s+of|a\s+couple|couple\s+of|an?|one|two|three|four|five|six|seven|eight|nine" \
        r"|ten|eleven|twelve)"
_ES_N = r"(?P<n>\d{1,3}|un\s+par\s+de|una?|uno|dos|tres|cuatro|cinco|seis|siete|ocho|nueve|diez|once|doce)"
_DE_N = r"(?P<n>\d{1,3}|eine[mnr]?|ein|zwei|drei|vier|fünf|sechs|sieben|acht|neun|zehn|elf|zwölf)"
_EN_UNIT = r"(?P<unit>day|week|month|year)s?"
_ES_UNIT = r"(?P<unit>d[íi]as?|semanas?|mes(?:es)?|años?)"
_DE_UNIT = r"(?P<unit>tag(?:en?)?|wochen?|monat(?:en?)?|jahr(?:en?)?)"
_DE_MOD = r"(?P<mod>(?:n(?:ä|ae)chst|kommend|letzt|vorig|vergangen|dies)(?:e[mnrs]?)?)"
_SEASON_MONTH = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}

_PARTS = {"morning": "morning", "afternoon": "afternoon", "evening": "evening", "night": "night",
          "mañana": "mañana", "tarde": "tarde", "noche": "noche", "früh": "Morgen", "morgen": "Morgen",
          "vormittag": "Vormittag", "mittag": "Mittag", "nachmittag": "Nachmittag", "abend": "Abend", "nacht": "Nacht"}
_REL_DAYS = {"yesterday": -1, "today": 0, "this": 0, "tomorrow": 1, "gestern": -1, "heute": 0, "morgen": 1}

# Words after which a replacement drops its own "on"/"in"/"am"/"en": "until tomorrow" -> "until 20 March 2026".
_PREPOSITIONS = {
    "en": frozenset("on in by until till til since from before after for of to about around during through".split()),
    "es": frozenset("desde hasta para de del antes después durante entre".split()),
    "de": frozenset("bis seit ab für von vom zum nach".split()),
}
# "the last week" is the past seven days, "das letzte Jahr" the past twelve months: not calendar periods.
_BLOCKING = frozenset("the my your his her our their that every das der die dem den des ein eine mein meine".split())
_DURATION = frozenset("time first ever best worst".split())  # "for the first time in 3 years"
_ES_NOT_TOMORROW = frozenset("la una esta esa aquella cada toda buena buenas media otra misma".split())
_DE_NOT_TOMORROW = frozenset("am den der dem des jeden guten diesen einen vom zum".split())
_NOT_PAST = frozenset("interested excited tired bored scared worried married engaged supposed used pleased "
                      "surprised stressed retired based named hundred".split())

_PREV_WORD = re.compile(r"(\w+)\W*$")
_POSSESSIVE = re.compile(r"['’]s\b")
_GREETING_END = re.compile(r"\s*(?:[!,.?]|$)")
_CLAUSE_BREAK = re.compile(r"[.!?;:,\n]|\b(?:and|but|so|because|although|while)\b", re.IGNORECASE)
_FUTURE = re.compile(r"\b(?:will|shall|going\s+to|gonna|plan(?:s|ning)?\s+to|wants?\s+to|hop(?:e|es|ing)\s+to"
                     r"|next|soon|upcoming|tomorrow)\b|['’]ll\b", re.IGNORECASE)
_PAST = re.compile(r"\b(?:was|were|did|had|went|got|came|saw|met|took|made|left|bought|began|spent|gave|told|said"
                   r"|found|felt|ran|won|lost|paid|wrote|flew|drove|ate|slept|became|ago|yesterday|last|used\s+to)\b",
                   re.IGNORECASE)
# A bare month in these clauses names no one year: "I was born in May", "my birthday is in June".
_RECURRING = re.compile(r"\b(?:born|birthdays?|anniversary|every|each|usually|always|often|annually)\b", re.IGNORECASE)
_PAST_ED = re.compile(r"\b[a-z]+[a-df-z]ed\b")  # lower case, so "Fred" is not a verb


# --- calendar helpers -------------------------------------------------------------------------------------------

def _month_start(day: date, months: int = 0) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _weekday_date(style: str, weekday: int, ref: date) -> date:
    """The `weekday` that `style` names: last (1-7 days back), this (0-6 on), coming (1-7 on), nextweek."""
    ahead = (weekday - ref.weekday()) % 7
    if style == "last":
        return ref - timedelta(days=(ref.weekday() - weekday) % 7 or 7)
    if style == "this":
        return ref + timedelta(days=ahead)
    if style == "coming":
        return ref + timedelta(days=ahead or 7)
    return _monday(ref) + timedelta(days=7 + weekday)


def _recent_month(month: int, ref: date, *, before_this: bool = False) -> date:
    """The most recent `month` (1-12) not after `ref` (strictly before ref's month if `before_this`)."""
    year = ref.year if month < ref.month or (month == ref.month and not before_this) else ref.year - 1
    return date(year, month, 1)


def _coming_month(month: int, ref: date, *, after_this: bool = False) -> date:
    """The next `month` (1-12) from `ref` on (strictly after ref's month if `after_this`)."""
    year = ref.year if month > ref.month or (month == ref.month and not after_this) else ref.year + 1
    return date(year, month, 1)


def _season(name: str, style: str, ref: date) -> _Span:
    """Northern meteorological seasons: next = first not begun, last = latest over, recent = latest begun,
    this = the current one, else the next if it begins within half a year, else the last."""
    starts = [date(year, _SEASON_MONTH[name], 1) for year in range(ref.year - 2, ref.year + 2)]
    spans = [_Span("season", start, name) for start in starts]
    upcoming = next(s for s in spans if s.start > ref)
    begun = [s for s in spans if s.start <= ref][-1]
    if style == "next":
        return upcoming
    if style == "recent" or (style == "this" and ref < begun.end):
        return begun
    if style == "this" and (upcoming.start - ref).days <= 183:
        return upcoming
    return [s for s in spans if s.end <= ref][-1]


def _shift(unit: str, amount: int, ref: date) -> _Span:
    """The day, week, month or year `amount` units from `ref`."""
    if unit == "day":
        return _Span("day", ref + timedelta(days=amount))
    if unit == "week":
        return _Span("week", _monday(ref + timedelta(weeks=amount)))
    if unit == "month":
        return _Span("month", _month_start(ref, amount))
    return _Span("year", date(ref.year + amount, 1, 1))


def _period(unit: str, direction: int, ref: date, *, coming_weekend: bool = False) -> _Span:
    """This (0), the last (-1) or the next (+1) week, weekend, month or year."""
    if unit == "weekend":
        if direction == 1 and coming_weekend:
            return _Span("weekend", _weekday_date("coming", 5, ref))
        return _Span("weekend", _monday(ref) + timedelta(days=5 + 7 * direction))
    return _shift(unit, direction, ref)


# --- reading the words ------------------------------------------------------------------------------------------

def _direction(word: str) -> int:
    word = " ".join(word.lower().split())
    if word.startswith(("last", "past", "this past", "pasad", "letzt", "vorig", "vergangen")):
        return -1
    if word.startswith(("next", "coming", "this coming", "próxim", "proxim", "que viene", "nächst", "naechst",
                        "kommend")):
        return 1
    return 0


def _unit(word: str) -> str:
    word = word.lower()
    for prefix, unit in (("weekend", "weekend"), ("d", "day"), ("t", "day"), ("w", "week"), ("s", "week"),
                         ("mo", "month"), ("mes", "month"), ("y", "year"), ("a", "year"), ("j", "year")):
        if word.startswith(prefix):
            return unit
    raise ValueError(word)


def _number(words: str) -> int:
    words = words.lower()
    if words.isdigit():
        return int(words)
    return 2 if "couple" in words or "par" in words else _NUMBERS[words.split()[0]]


def _prev_word(text: str, pos: int) -> str:
    found = _PREV_WORD.search(text, max(0, pos - 40), pos)
    return found[1].lower() if found else ""


def _at_sentence_start(text: str, pos: int) -> bool:
    before = text[:pos].rstrip(" \t\"'“‘(¿¡*-")
    return not before or before[-1] in ".!?\n"


def _clause(m: re.Match[str]) -> str:
    text, left = m.string, 0
    for brk in _CLAUSE_BREAK.finditer(text, 0, m.start()):
        left = brk.end()
    right = _CLAUSE_BREAK.search(text, m.end())
    return text[left : right.start() if right else len(text)]


def _is_past(m: re.Match[str]) -> bool:
    """Whether the clause around the match speaks of the past (and of no future)."""
    clause = _clause(m)
    if _FUTURE.search(clause):
        return False
    return bool(_PAST.search(clause)) or any(w not in _NOT_PAST for w in _PAST_ED.findall(clause))


def _is_future(m: re.Match[str]) -> bool:
    return bool(_FUTURE.search(_clause(m)))


def _blocked(m: re.Match[str], words: frozenset[str] = _BLOCKING) -> bool:
    return _prev_word(m.string, m.start()) in words


# --- handlers: a match and the reference day in, a _Span (or None: not a time after all) out ----------------------

def _day(offset: int, part: str = "") -> _Handler:
    return lambda m, ref: _Span("day", ref + timedelta(days=offset), part)


def _day_part(m: re.Match[str], ref: date) -> _Span | None:
    rel = m["rel"].lower()
    if rel == "morgen" and not _means_tomorrow(m, "rel"):
        return None
    return _Span("day", ref + timedelta(days=_REL_DAYS[rel]), _PARTS[m["part"].lower()])


def _means_tomorrow(m: re.Match[str], group: str | int = 0) -> bool:
    """German "morgen" is tomorrow; "Morgen" is the morning, unless it opens a sentence (and is no greeting)."""
    start, word = m.start(group), m[group]
    if _prev_word(m.string, start) in _DE_NOT_TOMORROW:
        return False
    return word[0].islower() or (_at_sentence_start(m.string, start) and not _GREETING_END.match(m.string, m.end()))


def _de_tomorrow(m: re.Match[str], ref: date) -> _Span | None:
    return _day(1)(m, ref) if _means_tomorrow(m) else None


def _es_tomorrow(m: re.Match[str], ref: date) -> _Span | None:
    """Spanish "mañana" is tomorrow, but "la mañana" / "esta mañana" is the morning."""
    return None if _blocked(m, _ES_NOT_TOMORROW) else _day(1)(m, ref)


def _weekday(style: str | None = None) -> _Handler:
    """A named weekday; `style` fixed, or read from the modifier (English "next" = next week's, German "coming")."""
    en_styles = {"last": "last", "this past": "last", "this": "this", "this coming": "coming", "next": "nextweek"}

    def handler(m: re.Match[str], ref: date) -> _Span | None:
        if _blocked(m):
            return None
        chosen = style
        if chosen is None:
            mod = " ".join(m["mod"].lower().split())
            chosen = en_styles.get(mod) or {-1: "last", 0: "this", 1: "coming"}[_direction(mod)]
        return _Span("day", _weekday_date(chosen, _WEEKDAY_INDEX[m["wd"].lower()], ref))
    return handler


def _relative(unit: str | None = None, coming_weekend: bool = False) -> _Handler:
    """Last/this/next week, weekend, month or year."""
    def handler(m: re.Match[str], ref: date) -> _Span | None:
        if _blocked(m):
            return None
        return _period(unit or _unit(m["unit"]), _direction(m["mod"]), ref, coming_weekend=coming_weekend)
    return handler


def _quantity(sign: int, *, duration_check: bool = False) -> _Handler:
    """N days/weeks/months/years ago (sign -1) or from now (+1)."""
    def handler(m: re.Match[str], ref: date) -> _Span | None:
        if duration_check and (_blocked(m, _DURATION) or _is_past(m)):
            return None
        return _shift(_unit(m["unit"]), sign * _number(m["n"]), ref)
    return handler


def _month_with_year(m: re.Match[str], ref: date) -> _Span:
    """"March last year" -> March 2025."""
    return _Span("month", date(ref.year + _direction(m["mod"]), _MONTH_INDEX[m["mon"].lower()] + 1, 1))


def _en_month(m: re.Match[str], ref: date) -> _Span | None:
    """in/last/next/this <month>, for resolving: "in" by the clause's tense (see the module's docstring)."""
    mod, month = m["mod"].lower(), _MONTH_INDEX[m["mon"].lower()] + 1
    if (mod != "in" and _blocked(m)) or (mod == "in" and _RECURRING.search(_clause(m))):
        return None
    if mod == "this":
        start = date(ref.year, month, 1)
    elif mod == "last" or (mod == "in" and _is_past(m)):
        start = _recent_month(month, ref, before_this=mod == "last")
    else:
        start = _coming_month(month, ref, after_this=mod == "next")
    return _Span("month", start, (m["q"] or "").lower())


def _en_season(m: re.Match[str], ref: date) -> _Span | None:
    if _blocked(m):
        return None
    return _season(m["season"].lower(), m["mod"].lower(), ref)


# --- handlers for recall questions --------------------------------------------------------------------------------

def _window_date(m: re.Match[str], ref: date) -> _Span | None:
    """A calendar date; without a year, the most recent one not after `ref`."""
    mon = m["mon"]
    month = int(mon) if mon.isdigit() else _MONTH_INDEX[mon.lower()] + 1
    try:
        day = date(int(m["year"]) if m["year"] else ref.year, month, int(m["day"]))
        if not m["year"] and day > ref:
            day = day.replace(year=ref.year - 1)
    except ValueError:  # 31 April, or 29 February in a common year
        return None
    return _Span("day", day)


def _window_month(m: re.Match[str], ref: date) -> _Span | None:
    month = _MONTH_INDEX[m["mon"].lower()] + 1
    if m["year"]:
        return _Span("month", date(int(m["year"]), month, 1))
    if not m["mod"]:
        return None
    direction = _direction(m["mod"])
    if direction == 0 and m["mod"].lower().startswith(("this", "dies", "este")):
        return _Span("month", date(ref.year, month, 1))
    return _Span("month", _recent_month(month, ref, before_this=direction < 0))


def _window_weekday(m: re.Match[str], ref: date) -> _Span | None:
    """"on Monday" -> the most recent Monday before today; "this Monday" -> this week's if it is past."""
    weekday = _WEEKDAY_INDEX[m["wd"].lower()]
    mod = (m["mod"] or "").lower()
    if mod == "this" and weekday <= ref.weekday():
        return _Span("day", _monday(ref) + timedelta(days=weekday))
    if _is_future(m):
        return None
    return _Span("day", _weekday_date("last", weekday, ref))


def _window_year(m: re.Match[str], ref: date) -> _Span:
    return _Span("year", date(int(m["year"]), 1, 1))


def _window_season(m: re.Match[str], ref: date) -> _Span:
    return _season(m["season"].lower(), "recent", ref)


def _recently(m: re.Match[str], ref: date) -> _Span:
    return _Span("recent", ref - timedelta(days=13))


# --- the rules ----------------------------------------------------------------------------------------------------
# Each rule names the words (lower case) one of which any of its matches holds: rules whose words are not in the
# text are not run, so a message without time words costs a split and a few set look-ups, not 50 regex scans.

_W_EN_MONTHS = " ".join(m.lower() for m in _EN_MONTHS)
_W_MONTHS = " ".join(_MONTH_INDEX)
_W_EN_WD = "monday tuesday wednesday thursday friday saturday sunday"
_W_ES_WD = "lunes martes miércoles miercoles jueves viernes sábado sabado domingo"
_W_DE_WD = "montag dienstag mittwoch donnerstag freitag samstag sonnabend sonntag"
_W_EN_UNITS = "day days week weeks month months year years"
_W_ES_UNITS = "día días dia dias semana semanas mes meses año años"
_W_DE_UNITS = "tag tage tagen woche wochen monat monate monaten jahr jahre jahren"
_W_SEASONS = "spring summer autumn fall winter"
_DIGIT = "0"  # stands for any digit in the text
_WORD = re.compile(r"\w+")
_ANY_DIGIT = re.compile(r"\d")


def _rule(lang: str, words: str, pattern: str, handler: _Handler) -> _Rule:
    return _Rule(re.compile(pattern, re.IGNORECASE), lang, handler, frozenset(words.split()))


_EN_RULES = [
    _rule("en", "yesterday", r"\b(?:the\s+)?day\s+before\s+yesterday\b", _day(-2)),
    _rule("en", "tomorrow", r"\b(?:the\s+)?day\s+after\s+tomorrow\b", _day(2)),
    _rule("en", "morning afternoon evening night",
          r"\b(?P<rel>yesterday|today|tomorrow|this)\s+(?P<part>morning|afternoon|evening|night)\b", _day_part),
    _rule("en", "night", r"\blast\s+night\b", _day(-1, "night")),
    _rule("en", "tonight", r"\btonight\b", _day(0, "night")),
    _rule("en", "yesterday", r"\byesterday\b", _day(-1)),
    _rule("en", "today", r"\btoday\b", _day(0)),
    _rule("en", "tomorrow", r"\btomorrow\b", _day(1)),
    _rule("en", _W_EN_WD, rf"\b(?P<mod>this\s+past|this\s+coming|last|next|this)\s+{_EN_WD}\b", _weekday()),
    _rule("en", "week weekend month year", r"\b(?P<mod>last|next|this)\s+(?P<unit>week|weekend|month|year)\b",
          _relative()),
    _rule("en", "year", rf"\b(?:(?:in|during)\s+)?{_EN_MON}\s+(?P<mod>last|next|this)\s+year\b", _month_with_year),
    _rule("en", _W_SEASONS, r"\b(?P<mod>last|next|this)\s+(?P<season>spring|summer|autumn|fall|winter)\b",
          _en_season),
    _rule("en", _W_EN_UNITS, rf"\bin\s+{_EN_N}\s+{_EN_UNIT}(?:['’]?\s+time)?\b(?!\s+or\b)",
          _quantity(1, duration_check=True)),
    _rule("en", _W_EN_UNITS, rf"\b{_EN_N}\s+{_EN_UNIT}\s+from\s+now\b", _quantity(1)),
    _rule("en", _W_EN_UNITS, rf"\b{_EN_N}\s+{_EN_UNIT}\s+ago\b", _quantity(-1)),
]

_ES_RULES = [
    _rule("es", "mañana", r"\bpasado\s+mañana\b", _day(2)),
    _rule("es", "anteayer antier ayer", r"\b(?:anteayer|antier|antes\s+de\s+ayer)\b", _day(-2)),
    _rule("es", "anoche", r"\banoche\b", _day(-1, "noche")),
    _rule("es", "mañana tarde noche", r"\besta\s+(?P<part>mañana|tarde|noche)\b",
          lambda m, ref: _Span("day", ref, m["part"].lower())),
    _rule("es", "ayer", r"\bayer\b", _day(-1)),
    _rule("es", "hoy", r"\bhoy\b", _day(0)),
    _rule("es", "mañana", r"\bmañana\b", _es_tomorrow),
    _rule("es", _W_ES_WD, rf"\b(?:el\s+)?pr[óo]ximo\s+{_ES_WD}\b", _weekday("coming")),
    _rule("es", _W_ES_WD, rf"\b(?:el\s+)?{_ES_WD}\s+(?:que\s+viene|pr[óo]ximo)\b", _weekday("coming")),
    _rule("es", _W_ES_WD, rf"\b(?:el\s+)?{_ES_WD}\s+pasado\b", _weekday("last")),
    _rule("es", _W_ES_WD, rf"\beste\s+{_ES_WD}\b", _weekday("this")),
    _rule("es", "semana", r"\b(?:el\s+)?fin\s+de\s+semana\s+(?P<mod>pasado|que\s+viene|pr[óo]ximo)\b",
          _relative("weekend", coming_weekend=True)),
    _rule("es", "semana", r"\b(?:el\s+)?(?P<mod>pr[óo]ximo|este)\s+fin\s+de\s+semana\b",
          _relative("weekend", coming_weekend=True)),
    _rule("es", "semana", r"\b(?:la\s+)?semana\s+(?P<mod>pasada|que\s+viene|pr[óo]xima)\b", _relative("week")),
    _rule("es", "semana", r"\b(?:la\s+)?(?P<mod>pr[óo]xima|esta)\s+semana\b", _relative("week")),
    _rule("es", "mes año", r"\b(?:el\s+)?(?P<unit>mes|año)\s+(?P<mod>pasado|que\s+viene|pr[óo]ximo)\b", _relative()),
    _rule("es", "mes año", r"\b(?:el\s+)?(?P<mod>pr[óo]ximo|este)\s+(?P<unit>mes|año)\b", _relative()),
    _rule("es", _W_ES_UNITS, rf"\bhace\s+{_ES_N}\s+{_ES_UNIT}\b", _quantity(-1)),
    _rule("es", _W_ES_UNITS, rf"\bdentro\s+de\s+{_ES_N}\s+{_ES_UNIT}\b", _quantity(1)),
]

_DE_RULES = [
    _rule("de", "übermorgen", r"\bübermorgen\b", _day(2)),
    _rule("de", "vorgestern", r"\bvorgestern\b", _day(-2)),
    _rule("de", "heute gestern morgen",
          r"\b(?P<rel>heute|gestern|morgen)\s+(?P<part>früh|morgen|vormittag|mittag|nachmittag|abend|nacht)\b",
          _day_part),
    _rule("de", "heute", r"\bheute\b", _day(0)),
    _rule("de", "gestern", r"\bgestern\b", _day(-1)),
    _rule("de", "morgen", r"\bmorgen\b", _de_tomorrow),
    _rule("de", _W_DE_WD, rf"\b(?:am\s+)?{_DE_MOD}\s+{_DE_WD}\b", _weekday()),
    _rule("de", "woche", rf"\b(?:in\s+(?:der\s+)?)?{_DE_MOD}\s+(?P<unit>woche)\b", _relative()),
    _rule("de", "wochenende", rf"\b(?:am\s+)?{_DE_MOD}\s+wochenende\b", _relative("weekend", coming_weekend=True)),
    _rule("de", "monat jahr", rf"\b(?:im\s+)?{_DE_MOD}\s+(?P<unit>monat|jahr)\b", _relative()),
    _rule("de", _W_DE_UNITS, rf"\bvor\s+{_DE_N}\s+{_DE_UNIT}\b", _quantity(-1)),
    _rule("de", _W_DE_UNITS, rf"\bin\s+{_DE_N}\s+{_DE_UNIT}\b", _quantity(1)),
]

def _bare_weekday(m: re.Match[str], ref: date) -> _Span | None:
    """"on Thursday" alone: the last one in a past-tense clause, else the coming one (1-7 days on)."""
    if _blocked(m):
        return None
    return _Span("day", _weekday_date("last" if _is_past(m) else "coming", _WEEKDAY_INDEX[m["wd"].lower()], ref))


_RESOLVE_RULES = [
    *_EN_RULES,
    _rule("en", _W_EN_WD, rf"\bon\s+{_EN_WD}\b(?!\s*,?\s*\d)", _bare_weekday),
    _rule("en", _W_EN_MONTHS, rf"\b(?P<mod>in|last|next|this)\s+(?P<q>early\s+|mid-?\s*|late\s+)?{_EN_MON}\b"
                              r"(?!\s*,?\s*\d|\s+of\s+\d)", _en_month),
    *_ES_RULES,
    *_DE_RULES,
]

# Listed first, so that on a tie with a shared rule these win ("this Monday" is a past day in a question).
_WINDOW_RULES = [
    _rule("en", _DIGIT, r"\b(?P<year>\d{4})-(?P<mon>\d{1,2})-(?P<day>\d{1,2})\b", _window_date),
    _rule("en", _W_EN_MONTHS,
          rf"\b(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_EN_MON}(?:,?\s+(?P<year>\d{{4}}))?\b", _window_date),
    _rule("en", _W_EN_MONTHS, rf"\b{_EN_MON}\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(?P<year>\d{{4}})\b)?",
          _window_date),
    _rule("es", _W_MONTHS, rf"\b(?P<day>\d{{1,2}})\s+de\s+{_ES_MON}(?:\s+del?\s+(?P<year>\d{{4}}))?\b", _window_date),
    _rule("de", _W_MONTHS, rf"\b(?P<day>\d{{1,2}})\.\s*{_DE_MON}(?:\s+(?P<year>\d{{4}}))?\b", _window_date),
    _rule("en", _W_EN_MONTHS,
          rf"\b(?:(?P<mod>in|during|last|this|from|since)\s+)?{_EN_MON}(?:,?\s+(?P<year>\d{{4}}))?\b", _window_month),
    _rule("es", _W_MONTHS, rf"\b(?:(?P<mod>en|durante|desde|este)\s+)?{_ES_MON}(?:\s+del?\s+(?P<year>\d{{4}}))?\b",
          _window_month),
    _rule("de", _W_MONTHS,
          rf"\b(?:(?P<mod>im|in|seit|letzten|vorigen|diesen)\s+)?{_DE_MON}(?:\s+(?P<year>\d{{4}}))?\b", _window_month),
    _rule("en", _DIGIT,
          r"\b(?:in|during|since|of|en|durante|desde|del|im(?:\s+jahr)?|seit)\s+(?P<year>(?:19|20)\d\d)\b",
          _window_year),
    _rule("en", _W_EN_WD, rf"\b(?P<mod>on|this\s+past|this|last)\s+{_EN_WD}\b", _window_weekday),
    _rule("es", _W_ES_WD, rf"\b(?P<mod>el)\s+{_ES_WD}\b", _window_weekday),
    _rule("de", _W_DE_WD, rf"\b(?P<mod>am)\s+{_DE_WD}\b", _window_weekday),
    _rule("en", _W_SEASONS, r"\b(?:in|during|over)\s+(?:the\s+)?(?P<season>spring|summer|autumn|fall|winter)\b",
          _window_season),
    _rule("en", "recently lately other recientemente últimamente ultimamente poco otro neulich kürzlich kurzem "
                "zeit letztens",
          r"\b(?:recently|lately|the\s+other\s+day|recientemente|[úu]ltimamente|hace\s+poco|el\s+otro\s+d[íi]a"
          r"|neulich|kürzlich|vor\s+kurzem|in\s+letzter\s+zeit|letztens)\b", _recently),
    *_EN_RULES,
    *_ES_RULES,
    *_DE_RULES,
]


# --- finding and rendering ----------------------------------------------------------------------------------------

def _words(text: str) -> set[str]:
    words = set(_WORD.findall(text.lower()))
    if _ANY_DIGIT.search(text):
        words.add(_DIGIT)
    return words


def _matches(text: str, rules: list[_Rule], ref: date, *, skip_possessive: bool = False) -> list[_Found]:
    """Every rule's matches, overlaps settled: the earliest, then the longest, then the rule listed first."""
    words = _words(text)
    candidates: list[tuple[int, int, int, _Found]] = []
    for order, rule in enumerate(rules):
        if rule.words.isdisjoint(words):
            continue
        for m in rule.pattern.finditer(text):
            if skip_possessive and _POSSESSIVE.match(text, m.end()):
                continue
            span = rule.handler(m, ref)
            if span is not None:
                candidates.append((m.start(), -m.end(), order, _Found(m.start(), m.end(), span, rule.lang)))
    candidates.sort(key=lambda c: c[:3])
    chosen: list[_Found] = []
    for start, _, _, found in candidates:
        if not chosen or start >= chosen[-1].end:
            chosen.append(found)
    return chosen


def _forms_en(span: _Span) -> tuple[str, str]:
    """(the full form, the form after a preposition) of a span in English."""
    d = span.start
    full = f"{d.day} {_EN_MONTHS[d.month - 1]} {d.year}"
    if span.unit == "day" and span.part:
        return f"on the {span.part} of {full}", f"the {span.part} of {full}"
    if span.unit == "season":
        label = f"winter {d.year}-{(d.year + 1) % 100:02d}" if d.month == 12 else f"{span.part} {d.year}"
        return f"in {label}", label
    text = {"day": f"on {full}", "week": f"in the week of {full}", "weekend": f"on the weekend of {full}",
            "month": f"in {span.part}{_EN_MONTHS[d.month - 1]} {d.year}", "year": f"in {d.year}"}[span.unit]
    return text, text.split(" ", 1)[1]


def _forms_es(span: _Span) -> tuple[str, str]:
    d = span.start
    full = f"{d.day} de {_ES_MONTHS[d.month - 1]} de {d.year}"
    if span.unit == "month":
        return f"en {_ES_MONTHS[d.month - 1]} de {d.year}", f"{_ES_MONTHS[d.month - 1]} de {d.year}"
    if span.unit == "year":
        return f"en {d.year}", str(d.year)
    text = {"day": f"el {full}" + (f" por la {span.part}" if span.part else ""),
            "week": f"la semana del {full}", "weekend": f"el fin de semana del {full}"}[span.unit]
    return text, text


def _forms_de(span: _Span) -> tuple[str, str]:
    d = span.start
    full = f"{d.day}. {_DE_MONTHS[d.month - 1]} {d.year}"
    if span.unit == "day" and span.part:
        if span.part == "Nacht":
            return f"in der Nacht des {full}", f"der Nacht des {full}"
        return f"am {span.part} des {full}", f"dem {span.part} des {full}"
    return {"day": (f"am {full}", full), "week": (f"in der Woche vom {full}", f"der Woche vom {full}"),
            "weekend": (f"am Wochenende vom {full}", f"dem Wochenende vom {full}"),
            "month": (f"im {_DE_MONTHS[d.month - 1]} {d.year}", f"{_DE_MONTHS[d.month - 1]} {d.year}"),
            "year": (f"im Jahr {d.year}", str(d.year))}[span.unit]


_FORMS = {"en": _forms_en, "es": _forms_es, "de": _forms_de}
_ES_CONTRACTION = re.compile(r"\b(de|a)\s+$", re.IGNORECASE)
_EN_SUBJECT = re.compile(r"\s+(?:was|is|were|will\s+be|has\s+been|had\s+been)\b", re.IGNORECASE)


def _replacement(text: str, found: _Found) -> str:
    full, bare = _FORMS[found.lang](found.span)
    after_preposition = _prev_word(text, found.start) in _PREPOSITIONS[found.lang]
    is_subject = found.lang == "en" and _EN_SUBJECT.match(text, found.end)  # "last year was hard" -> "2025 was"
    out = bare if after_preposition or is_subject else full
    if text[found.start].isupper() and _at_sentence_start(text, found.start):
        out = out[0].upper() + out[1:]
    return out


def resolve_relative_dates(text: str, said_at: datetime) -> str:
    """`text` with relative times ("yesterday", "next Saturday", "hace 3 días", "nächste Woche") replaced by the
    calendar dates they meant when it was said at `said_at` (give it in the speaker's timezone)."""
    pieces: list[str] = []
    pos = 0
    for found in _matches(text, _RESOLVE_RULES, said_at.date(), skip_possessive=True):
        before, new = text[pos : found.start], _replacement(text, found)
        contraction = _ES_CONTRACTION.search(before) if found.lang == "es" and new.startswith("el ") else None
        if contraction:  # "antes de el 20 de marzo" -> "antes del 20 de marzo"
            before, new = before[: contraction.start()] + contraction[1] + "l ", new[3:]
        pieces += [before, new]
        pos = found.end
    pieces.append(text[pos:])
    return "".join(pieces)


def _at_midnight(day: date, tz: tzinfo | None) -> datetime:
    return datetime.combine(day, time(), tzinfo=tz)


def time_window(question: str, now: datetime) -> tuple[datetime, datetime] | None:
    """The [start, end) that `question` refers to ("last week", "on 8 May 2023", "hace dos semanas"), in now's
    timezone (naive if now is), or None when it names no past or present time."""
    today = now.date()
    for found in _matches(question, _WINDOW_RULES, today):
        if found.span.start <= today:
            return _at_midnight(found.span.start, now.tzinfo), _at_midnight(found.span.end, now.tzinfo)
    return None
