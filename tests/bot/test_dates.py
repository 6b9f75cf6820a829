from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.dates import resolve_relative_dates, time_window

THU = datetime(2026, 3, 19, 15, 0, tzinfo=UTC)  # a Thursday
SUN = datetime(2026, 3, 22, 10, 0, tzinfo=UTC)  # a Sunday
MON = datetime(2026, 3, 16, 9, 0, tzinfo=UTC)
JAN31 = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)  # a Saturday, the last day of a month
DEC31 = datetime(2026, 12, 31, 20, 0, tzinfo=UTC)  # a Thursday, the last day of a year
NEW_YEAR = datetime(2027, 1, 1, 8, 0, tzinfo=UTC)
MAY = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)

ENGLISH = [
    ("I went hiking yesterday.", THU, "I went hiking on 18 March 2026."),
    ("Yesterday evening we had pizza.", THU, "On the evening of 18 March 2026 we had pizza."),
    ("I'm off tomorrow.", DEC31, "I'm off on 1 January 2027."),
    ("I saw her the day before yesterday.", JAN31, "I saw her on 29 January 2026."),
    ("Flying out the day after tomorrow.", DEC31, "Flying out on 2 January 2027."),
    ("We have a date tonight.", THU, "We have a date on the night of 19 March 2026."),
    ("I ran 5 km this morning.", THU, "I ran 5 km on the morning of 19 March 2026."),
    ("Today I start my new job.", THU, "On 19 March 2026 I start my new job."),
    ("My exam is this Saturday.", THU, "My exam is on 21 March 2026."),
    ("My exam is next Saturday.", THU, "My exam is on 28 March 2026."),
    ("My exam is this Saturday.", SUN, "My exam is on 28 March 2026."),
    ("My exam is next Saturday.", SUN, "My exam is on 28 March 2026."),
    ("I saw Ben last Saturday.", THU, "I saw Ben on 14 March 2026."),
    ("I'll see you on Saturday.", THU, "I'll see you on 21 March 2026."),
    ("My exam is on Thursday.", THU, "My exam is on 26 March 2026."),
    ("I met Ben on Tuesday.", THU, "I met Ben on 17 March 2026."),
    ("The shop opens on Monday, 3 May.", THU, "The shop opens on Monday, 3 May."),
    ("I saw Ben last Sunday.", SUN, "I saw Ben on 15 March 2026."),
    ("I'm in Rome next week.", THU, "I'm in Rome in the week of 23 March 2026."),
    ("I was in Rome last week.", SUN, "I was in Rome in the week of 9 March 2026."),
    ("We hiked this weekend.", SUN, "We hiked on the weekend of 21 March 2026."),
    ("We hike next weekend.", THU, "We hike on the weekend of 28 March 2026."),
    ("We hiked last weekend.", THU, "We hiked on the weekend of 14 March 2026."),
    ("I start the new job next month.", DEC31, "I start the new job in January 2027."),
    ("I moved last month.", JAN31, "I moved in December 2025."),
    ("I got married last year.", JAN31, "I got married in 2025."),
    ("Last year was hard.", JAN31, "2025 was hard."),
    ("I'll see her in two weeks.", THU, "I'll see her in the week of 30 March 2026."),
    ("The exam is in 3 days.", DEC31, "The exam is on 3 January 2027."),
    ("We moved here 3 weeks ago.", THU, "We moved here in the week of 23 February 2026."),
    ("I came back a couple of days ago.", THU, "I came back on 17 March 2026."),
    ("I quit a month ago, and two years ago I moved.", JAN31, "I quit in December 2025, and in 2024 I moved."),
    ("The lease ends six months from now.", DEC31, "The lease ends in June 2027."),
    ("We're going to Japan in December.", THU, "We're going to Japan in December 2026."),
    ("I went to Japan in January and I'm going back in December.", THU,
     "I went to Japan in January 2026 and I'm going back in December 2026."),
    ("We met last December.", THU, "We met in December 2025."),
    ("We marry next March.", THU, "We marry in March 2027."),
    ("I graduated in March last year.", THU, "I graduated in March 2025."),
    ("next summer, last winter, this fall", THU, "in summer 2026, in winter 2025-26, in fall 2026"),
    ("next winter and last summer", DEC31, "in winter 2027-28 and in summer 2026"),
    ("Until tomorrow! Since last week I've had a cold.", THU,
     "Until 20 March 2026! Since the week of 9 March 2026 I've had a cold."),
]

SPANISH = [
    ("Ayer fui al cine.", THU, "El 18 de marzo de 2026 fui al cine."),
    ("Mañana por la mañana tengo una entrevista.", THU,
     "El 20 de marzo de 2026 por la mañana tengo una entrevista."),
    ("Pasado mañana voy a Madrid.", DEC31, "El 2 de enero de 2027 voy a Madrid."),
    ("Anteayer llegué.", JAN31, "El 29 de enero de 2026 llegué."),
    ("Hoy es mi cumpleaños.", THU, "El 19 de marzo de 2026 es mi cumpleaños."),
    ("La semana que viene voy a Madrid.", THU, "La semana del 23 de marzo de 2026 voy a Madrid."),
    ("Fui a Madrid la semana pasada.", THU, "Fui a Madrid la semana del 9 de marzo de 2026."),
    ("El mes pasado me mudé.", JAN31, "En diciembre de 2025 me mudé."),
    ("El año que viene me caso.", DEC31, "En 2027 me caso."),
    ("El próximo sábado juego.", THU, "El 21 de marzo de 2026 juego."),
    ("El sábado pasado jugué.", SUN, "El 21 de marzo de 2026 jugué."),
    ("Hace 3 días empecé a correr.", THU, "El 16 de marzo de 2026 empecé a correr."),
    ("Lo compré hace dos semanas.", THU, "Lo compré la semana del 2 de marzo de 2026."),
    ("Nos vemos antes de mañana.", THU, "Nos vemos antes del 20 de marzo de 2026."),
    ("Desde el año pasado vivo aquí.", THU, "Desde 2025 vivo aquí."),
    ("Esta mañana corrí.", THU, "El 19 de marzo de 2026 por la mañana corrí."),
]

GERMAN = [
    ("Gestern war ich beim Arzt.", THU, "Am 18. März 2026 war ich beim Arzt."),
    ("Morgen früh fahre ich los.", THU, "Am Morgen des 20. März 2026 fahre ich los."),
    ("Ich fahre morgen nach Berlin.", DEC31, "Ich fahre am 1. Januar 2027 nach Berlin."),
    ("Morgen ist ein neuer Tag.", THU, "Am 20. März 2026 ist ein neuer Tag."),
    ("Übermorgen habe ich frei, vorgestern nicht.", THU, "Am 21. März 2026 habe ich frei, am 17. März 2026 nicht."),
    ("Heute Abend gehe ich aus.", THU, "Am Abend des 19. März 2026 gehe ich aus."),
    ("Nächste Woche fahre ich nach Berlin.", THU, "In der Woche vom 23. März 2026 fahre ich nach Berlin."),
    ("Ich war vorige Woche krank.", SUN, "Ich war in der Woche vom 9. März 2026 krank."),
    ("Nächsten Monat ziehe ich um.", DEC31, "Im Januar 2027 ziehe ich um."),
    ("Ich bin letzten Monat umgezogen.", JAN31, "Ich bin im Dezember 2025 umgezogen."),
    ("Nächstes Jahr heirate ich.", DEC31, "Im Jahr 2027 heirate ich."),
    ("Nächsten Samstag spiele ich.", THU, "Am 21. März 2026 spiele ich."),
    ("Letzten Samstag habe ich gespielt.", SUN, "Am 21. März 2026 habe ich gespielt."),
    ("Vor 2 Wochen habe ich einen Hund bekommen.", THU, "In der Woche vom 2. März 2026 habe ich einen Hund bekommen."),
    ("In drei Tagen habe ich Geburtstag.", DEC31, "Am 3. Januar 2027 habe ich Geburtstag."),
    ("Seit letztem Monat wohne ich hier.", THU, "Seit Februar 2026 wohne ich hier."),
]

UNTOUCHED = [
    "My daughter was born on 3 May 2023.",
    "The form is dated 2023-05-03.",
    "I have a meeting at 5 pm.",
    "May I ask you something? This may take a while.",
    "I watched a film about the March on Washington.",
    "It happened in May 2023, and again in March, 2019.",
    "I lost 5 kg in 3 months.",
    "For the first time in 3 years I'm on holiday.",
    "I'll be there in a day or two.",
    "I came back a few days ago.",
    "I've been sick for the last week.",
    "Today's my birthday.",
    "My dog is named Sunday.",
    "The next day we went home.",
    "Corro por la mañana, todas las mañanas.",
    "Guten Morgen! Am Morgen trinke ich Kaffee.",
    "Das letzte Jahr war schwer.",
    "I was born in May, my birthday is in May, and I usually ski in January.",
]


@pytest.mark.parametrize(("text", "said_at", "expected"), ENGLISH + SPANISH + GERMAN)
def test_resolves_relative_dates(text, said_at, expected):
    assert resolve_relative_dates(text, said_at) == expected


@pytest.mark.parametrize("text", UNTOUCHED)
def test_leaves_absolute_dates_times_and_other_words_alone(text):
    assert resolve_relative_dates(text, THU) == text


@pytest.mark.parametrize(("text", "said_at", "expected"), ENGLISH[::4] + SPANISH[::4] + GERMAN[::4])
def test_resolving_twice_changes_nothing_more(text, said_at, expected):
    assert resolve_relative_dates(expected, said_at) == expected


def test_the_day_is_taken_in_said_at_timezone():
    said_at = datetime(2026, 3, 19, 0, 30, tzinfo=ZoneInfo("Europe/Madrid"))  # still 18 March in UTC
    assert resolve_relative_dates("yesterday", said_at) == "on 18 March 2026"


def d(year: int, month: int, day: int) -> date:
    return date(year, month, day)


WINDOWS = [
    ("What did I say last week?", THU, d(2026, 3, 9), d(2026, 3, 16)),
    ("What did we talk about yesterday?", JAN31, d(2026, 1, 30), d(2026, 1, 31)),
    ("What did I tell you yesterday?", NEW_YEAR, d(2026, 12, 31), d(2027, 1, 1)),
    ("what did I say today", THU, d(2026, 3, 19), d(2026, 3, 20)),
    ("What did I say in May?", THU, d(2025, 5, 1), d(2025, 6, 1)),
    ("What did I say in May?", MAY, d(2026, 5, 1), d(2026, 6, 1)),
    ("what did I do in May 2023", THU, d(2023, 5, 1), d(2023, 6, 1)),
    ("What happened on 8 May 2023?", THU, d(2023, 5, 8), d(2023, 5, 9)),
    ("What happened on May 8th, 2023?", THU, d(2023, 5, 8), d(2023, 5, 9)),
    ("What did I say on the 8th of May?", THU, d(2025, 5, 8), d(2025, 5, 9)),
    ("what did I log on 2023-05-08", THU, d(2023, 5, 8), d(2023, 5, 9)),
    ("what did I tell you in 2023?", THU, d(2023, 1, 1), d(2024, 1, 1)),
    ("What did we discuss last month?", JAN31, d(2025, 12, 1), d(2026, 1, 1)),
    ("What have I told you this year?", DEC31, d(2026, 1, 1), d(2027, 1, 1)),
    ("What did I say two weeks ago?", THU, d(2026, 3, 2), d(2026, 3, 9)),
    ("What did I say 3 days ago?", JAN31, d(2026, 1, 28), d(2026, 1, 29)),
    ("Where did I go last summer?", THU, d(2025, 6, 1), d(2025, 9, 1)),
    ("What did I do last winter?", JAN31, d(2024, 12, 1), d(2025, 3, 1)),
    ("What have we talked about recently?", THU, d(2026, 3, 6), d(2026, 3, 20)),
    ("What did I say on Monday?", THU, d(2026, 3, 16), d(2026, 3, 17)),
    ("What did I say on Monday?", MON, d(2026, 3, 9), d(2026, 3, 10)),
    ("What did I say this Monday?", THU, d(2026, 3, 16), d(2026, 3, 17)),
    ("What did I say on Sunday?", SUN, d(2026, 3, 15), d(2026, 3, 16)),
    ("¿Qué te dije ayer?", THU, d(2026, 3, 18), d(2026, 3, 19)),
    ("¿Qué te conté la semana pasada?", THU, d(2026, 3, 9), d(2026, 3, 16)),
    ("¿De qué hablamos el mes pasado?", JAN31, d(2025, 12, 1), d(2026, 1, 1)),
    ("¿Qué te dije hace dos semanas?", THU, d(2026, 3, 2), d(2026, 3, 9)),
    ("¿Qué te dije el lunes?", THU, d(2026, 3, 16), d(2026, 3, 17)),
    ("¿Qué hice en mayo?", THU, d(2025, 5, 1), d(2025, 6, 1)),
    ("¿Qué pasó el 8 de mayo de 2023?", THU, d(2023, 5, 8), d(2023, 5, 9)),
    ("¿De qué hablamos últimamente?", THU, d(2026, 3, 6), d(2026, 3, 20)),
    ("Was habe ich gestern gesagt?", THU, d(2026, 3, 18), d(2026, 3, 19)),
    ("Was habe ich letzte Woche erzählt?", THU, d(2026, 3, 9), d(2026, 3, 16)),
    ("Was habe ich vor zwei Wochen gesagt?", THU, d(2026, 3, 2), d(2026, 3, 9)),
    ("Was habe ich am Montag gesagt?", THU, d(2026, 3, 16), d(2026, 3, 17)),
    ("Was habe ich im Mai gemacht?", THU, d(2025, 5, 1), d(2025, 6, 1)),
    ("Was war am 8. Mai 2023?", THU, d(2023, 5, 8), d(2023, 5, 9)),
    ("Was habe ich letztes Jahr gemacht?", THU, d(2025, 1, 1), d(2026, 1, 1)),
]

NO_WINDOW = [
    "What's my dog's name?",
    "May I ask what my name is?",
    "What are my plans for next week?",
    "Remind me what I'm doing tomorrow.",
    "What will I do on Monday?",
    "Could you remind me what my sister's favourite kind of flowers is, and where she lives?",
    "¿Cómo se llama mi perro?",
    "Wie heißt mein Hund?",
]


@pytest.mark.parametrize(("question", "now", "start", "end"), WINDOWS)
def test_time_window(question, now, start, end):
    assert time_window(question, now) == (datetime.combine(start, datetime.min.time(), UTC),
                                          datetime.combine(end, datetime.min.time(), UTC))


@pytest.mark.parametrize("question", NO_WINDOW)
def test_no_window_without_a_past_time(question):
    assert time_window(question, THU) is None


def test_window_is_in_now_timezone():
    madrid = ZoneInfo("Europe/Madrid")
    now = datetime(2026, 3, 19, 0, 30, tzinfo=madrid)  # still 18 March in UTC
    start, end = time_window("what did I say yesterday?", now)
    assert (start, end) == (datetime(2026, 3, 18, tzinfo=madrid), datetime(2026, 3, 19, tzinfo=madrid))


def test_naive_now_gives_a_naive_window():
    assert time_window("yesterday", datetime(2026, 3, 19, 12)) == (datetime(2026, 3, 18), datetime(2026, 3, 19))
