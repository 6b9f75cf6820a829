"""Reading a query and fusing channel rankings (`memory/recall.py`), and splitting messages into passages."""

from datetime import UTC, datetime

from memory.passages import split_passages
from memory.recall import Hit, RecallQuery, entity_terms, fuse, keyword_terms, match_expression, run_channels


def words(text: str) -> int:
    return len(text.split())


def test_keyword_terms_drop_stop_words_and_repeats():
    assert keyword_terms("What did I say about the Porto trip? The trip!") == ("porto", "trip")
    assert keyword_terms("¿Qué dije sobre Lisboa?") == ("dije", "sobre", "lisboa")


def test_entity_terms_are_names_and_numbers_even_at_the_start():
    assert entity_terms("Porto or Lisbon: where did Mira's party in 2024 happen?") == ("porto", "lisbon", "mira",
                                                                                      "2024")
    assert entity_terms("what's my sister's name?") == ()


def test_match_expression_quotes_every_term():
    assert match_expression(["porto", 'say "hi"']) == '"porto" OR "say ""hi"""'
    assert match_expression([]) is None


def test_fuse_ranks_what_several_channels_agree_on_first():
    fused = fuse({"dense": ["a", "b", "c"], "keyword": ["c", "d"], "time": ["c"]})
    assert fused[0] == "c" and set(fused) == {"a", "b", "c", "d"}
    assert fuse({"dense": ["a", "b"]}) == ["a", "b"]


class Channels:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def dense(self, depth):
        self.calls.append("dense")
        return [hit("a", "m1", 0.9), hit("low", "m2", 0.05)]

    def keyword(self, terms, depth):
        self.calls.append(f"keyword {' '.join(terms)}")
        return [hit("k", "m3", 0.01)]

    def within(self, window, depth):
        self.calls.append("time")
        return [hit("t", "m4", 0.2)]


def test_run_channels_uses_only_what_the_query_has_and_min_score_only_for_meaning():
    channels = Channels()
    window = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    hits = run_channels(channels, RecallQuery.of("What did Ana say in January?", window), 10, 0.1)
    assert {h.id for h in hits} == {"a", "k", "t"}  # "low" is under the minimum; "k" matched words
    assert channels.calls == ["dense", "keyword ana january", "keyword ana january", "time"]
    channels = Channels()
    run_channels(channels, RecallQuery.of("hello", None, ["dense"]), 10, 0.1)
    assert channels.calls == ["dense"]


def hit(memory_id: str, message_id: str, score: float) -> Hit:
    return Hit(memory_id, {"source_platform": "console", "source_message_id": message_id}, score)


class Found:
    """Channels that found fixed hits: two facts and the passage of message m1, a fact of m2, a passage of m3."""

    def dense(self, depth):
        return [hit("m1-fact", "m1", 0.8), hit("m2-fact", "m2", 0.7), hit("m1-fact2", "m1", 0.6)]

    def keyword(self, terms, depth):
        return [hit("m3-said", "m3", 0.1), hit("m1-said", "m1", 0.5)]

    def within(self, window, depth):
        return []


def test_messages_rank_by_all_their_memories_and_show_their_best_first():
    hits = run_channels(Found(), RecallQuery.of("what about the harbour"), 10, 0.0)
    # m1 was found by both channels; each message's best memory comes before any second one
    assert [h.id for h in hits] == ["m1-fact", "m3-said", "m2-fact", "m1-fact2", "m1-said"]


def test_short_text_is_one_passage():
    assert split_passages("  I live in Lisbon.  ", words, 10) == ["I live in Lisbon."]
    assert split_passages(" \n ", words, 10) == []


def test_long_text_is_split_at_sentences_and_every_passage_fits():
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    passages = split_passages(text, words, 20)
    assert all(words(p) <= 20 for p in passages)
    assert " ".join(passages) == text
    assert all(p.endswith(".") for p in passages)


def test_a_sentence_too_long_is_cut_at_words_and_text_without_spaces_at_characters():
    passages = split_passages("word " * 55, words, 10)
    assert [words(p) for p in passages] == [10, 10, 10, 10, 10, 5]
    cjk = "我住在里斯本" * 20

    def chars(text):
        return len(text)

    parts = split_passages(cjk, chars, 50)
    assert "".join(parts) == cjk and all(len(p) <= 50 for p in parts)
