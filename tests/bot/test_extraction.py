from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from bot.extraction import RETRY_NOTE, ExtractionError, FactExtractor, grounded, parse_facts, resolve_dates
from bot.llm.base import ChatMessage, GenerationParams
from bot.llm.runner import LocalModel

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def test_parse_valid_answer_dedupes_and_trims():
    raw = 'Sure! {"facts": ["The user  is vegetarian.", "the user is vegetarian.", "The user is Dana."]}'
    assert parse_facts(raw) == ["The user is vegetarian.", "The user is Dana."]


def test_parse_empty_facts():
    assert parse_facts('```json\n{"facts": []}\n```') == []


@pytest.mark.parametrize("raw", ["no json here", '{"facts": "x"}', '{"facts": [1]}', '{"other": []}', "{broken"])
def test_parse_invalid_answers_raise(raw):
    with pytest.raises(ExtractionError):
        parse_facts(raw)


class Answers:
    name = "answers"
    context_tokens = 4096

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.prompts: list[list[ChatMessage]] = []

    def count_tokens(self, text: str) -> int:
        return len(text) // 4

    def prompt_tokens(self, messages: list[ChatMessage]) -> int:
        return sum(len(m.content) for m in messages) // 4

    def stream(self, messages: list[ChatMessage], params: GenerationParams,
               should_stop: Callable[[], bool]) -> Iterator[str]:
        self.prompts.append(messages)
        yield self.answers.pop(0)


async def test_retries_once_then_succeeds():
    backend = Answers("nonsense", '{"facts": ["The user has a cat."]}')
    assert await FactExtractor(LocalModel(backend)).extract("I have a cat", NOW) == ["The user has a cat."]
    assert "not valid" in backend.prompts[1][-1].content


async def test_gives_up_after_the_retry():
    backend = Answers("nonsense", "still nonsense")
    with pytest.raises(ExtractionError):
        await FactExtractor(LocalModel(backend)).extract("I have a cat", NOW)


async def test_prompt_carries_the_date_for_relative_times():
    backend = Answers('{"facts": []}')
    await FactExtractor(LocalModel(backend)).extract("hi", NOW)
    assert "26 November 2026" in backend.prompts[0][0].content


@pytest.mark.parametrize(("fact", "message"), [
    ("The user is vegetarian.", "I'm vegetarian, so no meat for me please"),
    ("The user's name is Dana.", "My name is Dana and I am vegetarian"),
    ("The user moved to Porto on 7 May 2023.", "I moved to Porto yesterday"),
    ("The user has two cats named Tom and Jerry.", "my cats Tom and Jerry say hi, I have two of them"),
])
def test_grounded_facts_are_kept(fact, message):
    assert grounded(fact, message)


@pytest.mark.parametrize(("fact", "message"), [
    ("The user works as a nurse.", "I'm vegetarian, so no meat for me please"),
    ("The user lives in Leeds.", "hey, how's it going?"),
    ("The user has two cats.", "I went hiking last weekend"),
    ("The user's name is Sam.", "My name is Dana"),
])
def test_made_up_facts_are_not_grounded(fact, message):
    assert not grounded(fact, message)


async def test_extract_drops_facts_not_in_the_message():
    backend = Answers('{"facts": ["The user is vegetarian.", "The user works as a nurse in Leeds."]}')
    facts = await FactExtractor(LocalModel(backend)).extract("I'm vegetarian", NOW)
    assert facts == ["The user is vegetarian."]


@pytest.mark.parametrize(("fact", "resolved"), [
    ("The user went hiking yesterday.", "The user went hiking on 25 November 2026."),
    ("The user moved to Porto last year.", "The user moved to Porto in 2025."),
    ("The user has an exam next month.", "The user has an exam in December 2026."),
    ("The user saw a concert last Saturday.", "The user saw a concert on 21 November 2026."),
    ("The user is vegetarian.", "The user is vegetarian."),
])
def test_relative_dates_become_dates(fact, resolved):
    assert resolve_dates(fact, NOW) == resolved  # NOW is Thursday, 26 November 2026


def test_facts_not_about_the_user_are_not_kept():
    assert not grounded("The capital of France is Paris.", "what's the capital of France?")


def test_facts_may_name_the_user_instead():
    message = "Melanie: Yeah, I painted that lake sunrise last year!"
    assert grounded("Melanie painted the lake sunrise in 2022.", message, user_name="Melanie")
    assert not grounded("Melanie painted the lake sunrise in 2022.", message)


async def test_a_message_too_long_for_the_context_is_cut_to_fit():
    backend = Answers('{"facts": ["The user has a cat."]}')
    backend.context_tokens = 1024
    extractor = FactExtractor(LocalModel(backend))
    text = "I have a cat. " + "blah " * 3000  # ~15,000 characters, ~3,750 tokens
    assert await extractor.extract(text, NOW) == ["The user has a cat."]
    [prompt] = backend.prompts
    room = 1024 - 2 * 160 - backend.count_tokens(RETRY_NOTE)  # room for the answer and one retry
    assert backend.prompt_tokens(prompt) <= room and "I have a cat." in prompt[-1].content
