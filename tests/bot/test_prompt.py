from dataclasses import replace
from datetime import UTC, datetime

from bot.history import Turn, steady_window
from bot.prompt import build_prompt, fit_memories, in_prompt_order, shown_memories
from memory.records import MemoryRecord, Source

NOW = datetime(2026, 11, 26, tzinfo=UTC)
SOURCE = Source("console", "local", "t", "m", None, NOW.isoformat())


def record(text: str, day: int) -> MemoryRecord:
    when = datetime(2026, 11, day, tzinfo=UTC)
    return MemoryRecord(id=text, text=text, created_at=when, updated_at=when, source=SOURCE)


def count(messages) -> int:
    return sum(len(m.content.split()) + 3 for m in messages)


def build(text="hello there", memories=(), history=(), budget=10_000, profile=(), later=(), listed=()):
    return build_prompt(bot_name="bot", user_name="Dana", text=text, memories=list(memories),
                        history=list(history), now=NOW, budget=budget, count_prompt=count, profile=list(profile),
                        later=list(later), listed=list(listed))


def test_memories_are_a_bullet_list_in_the_system_prompt():
    messages = build(memories=[record("The user is vegetarian.", 1), record("The user has a cat.", 2)])
    assert "- The user is vegetarian.\n- The user has a cat." in messages[0].content
    assert messages[-1].content == "hello there"


def test_memories_are_best_first_or_in_the_order_learned_for_a_prefix_reusing_backend():
    best_first = [record("c", 3), record("a", 1), record("b", 2)]
    assert in_prompt_order(best_first, stable=False) == best_first
    assert [r.text for r in in_prompt_order(best_first, stable=True)] == ["a", "b", "c"]
    assert in_prompt_order(list(reversed(best_first)), stable=True) == in_prompt_order(best_first, stable=True)


def test_fit_memories_keeps_the_best_first_prefix():
    records = [record("a b c", 1), record("d e f", 2), record("g h i", 3)]
    assert [r.text for r in fit_memories(records, 8, lambda s: len(s.split()))] == ["a b c", "d e f"]


def test_history_goes_first_then_oldest_memories_then_the_message_end():
    history = [Turn("u", f"old question {i} " * 5, f"old answer {i} " * 5) for i in range(3)]
    memories = [record("new fact " * 5, 20), record("old fact " * 5, 1)]
    full = count(build(memories=memories, history=history))
    no_history = build(memories=memories, history=history, budget=full - 20)
    assert len(no_history) == 2 + 2 * 2  # the oldest turn went
    only_memories = build(memories=memories, history=history, budget=count(build(memories=memories)))
    assert len(only_memories) == 2
    fewer = build(memories=memories, history=history, budget=count(build(memories=memories)) - 5)
    assert "new fact" in fewer[0].content and "old fact" not in fewer[0].content
    tiny = build(text="word " * 400, memories=memories, history=history, budget=60)
    assert count(tiny) <= 60 and len(tiny) == 2 and tiny[-1].content.startswith("word word")


def test_shown_memories_are_those_left_after_fitting():
    memories = [record("new fact " * 5, 20), record("old fact " * 5, 1)]
    full = build(memories=memories)
    assert shown_memories(full, memories, "Dana") == memories
    fitted = build(memories=memories, budget=count(full) - 5)  # the oldest memory has to go
    assert shown_memories(fitted, memories, "Dana") == memories[:1]


def test_profile_first_passages_quoted_with_their_day_and_profile_kept_longest():
    profile = [replace(record("The user's name is Dana.", 2), attribute="name")]
    passage = replace(record("I fixed the boiler myself", 3), kind="message")
    messages = build(memories=[record("The user has a cat.", 1), passage], profile=profile)
    assert ("- The user's name is Dana.\n- The user has a cat.\n"
            '- On 26 November 2026, Dana said: "I fixed the boiler myself"') in messages[0].content
    assert shown_memories(messages, profile + [passage], "Dana") == profile + [passage]
    tight = build(memories=[record("The user has a cat.", 1), passage], profile=profile,
                  budget=count(build(profile=profile)))
    assert "Dana." in tight[0].content and "cat" not in tight[0].content and "boiler" not in tight[0].content


def test_later_memories_come_just_before_the_message_and_go_first_when_the_prompt_is_cut():
    held, added = [record("held fact " * 5, 1)], [record("added fact " * 5, 20), record("older added " * 5, 2)]
    history = [Turn("u", "question", "answer")]
    full = build(memories=held, later=added, history=history)
    assert [m.role for m in full] == ["system", "user", "assistant", "system", "user"]
    assert "added fact" in full[3].content and "added fact" not in full[0].content
    assert shown_memories(full, held + added, "Dana") == held + added  # both system messages count
    assert len(build(memories=held, later=added, history=history, budget=count(full) - 5)) == 3  # history first
    alone = build(memories=held, later=added)
    cut = build(memories=held, later=added, budget=count(alone) - 5)
    assert cut[0] == alone[0] and "older added" not in cut[1].content and "added fact" in cut[1].content
    no_later = build(memories=held, later=added, budget=count([alone[0], alone[2]]))
    assert [m.role for m in no_later] == ["system", "user"] and no_later[0] == alone[0]


def test_earlier_messages_keep_their_lists_and_lose_them_with_the_turn():
    history = [Turn("u", "first question", "first answer"), Turn("u", "second question", "second answer")]
    lists = [[], [record("listed fact " * 5, 3)]]
    full = build(history=history, listed=lists, later=[record("added fact " * 5, 4)])
    assert [m.role for m in full] == ["system", "user", "assistant", "system", "user", "assistant", "system", "user"]
    assert "listed fact" in full[3].content and full[4].content == "second question"
    cut = build(history=history, listed=lists, later=[record("added fact " * 5, 4)], budget=count(full) - 5)
    assert [m.content for m in cut if m.role == "user"] == ["second question", "hello there"]  # the oldest left
    assert "listed fact" in cut[1].content  # the second question's list stayed with it
    shorter = build(history=history, listed=lists, budget=count(full[:1] + full[3:6] + full[7:]))
    assert "listed fact" in shorter[1].content and "first question" not in str(shorter)


def turns(*shown: int) -> list[Turn]:
    return [Turn("u", f"q{i}", f"a{i}", shown_turns=n) for i, n in enumerate(shown)]


def test_the_steady_window_grows_by_one_and_drops_the_oldest_half_at_once():
    assert steady_window([], 6) == []
    history = turns(0, 1, 2, 3, 4, 5)
    assert steady_window(history, 6) == history  # the last prompt held 5 turns: now those and the last one
    assert steady_window(turns(1, 2, 3, 4, 5, 6), 6) == turns(1, 2, 3, 4, 5, 6)[-4:]  # 7 > 6: 3 go at once
    assert steady_window(turns(0, 1), 1) == turns(0, 1)[-1:]  # a window of one moves every reply
    assert len(steady_window(turns(*range(12, 18)), 6)) <= 6  # HISTORY_TURNS lowered since: never above it
    assert steady_window(history, 0) == []
    assert steady_window(turns(4, 5), 6) == turns(4, 5)  # turns deleted since: what is left
