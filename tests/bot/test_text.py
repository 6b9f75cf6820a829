from bot.text import clean_input, strip_reasoning, truncate, without_reasoning


def test_clean_input_drops_control_characters():
    assert clean_input("  he\x00llo\x1b[31m\n\tthere \u200b ") == "hello[31m\n\tthere"


def test_truncate():
    assert truncate("abcdef", 3) == ("abc", True)
    assert truncate("abc", 3) == ("abc", False)


def test_strip_reasoning():
    assert strip_reasoning("<think>hmm\nok</think>Hello") == "Hello"
    assert strip_reasoning("Hi <think>unfinished") == "Hi"


async def test_stream_hides_think_blocks_split_across_pieces():
    async def pieces():
        for p in ["Hel", "lo <th", "ink>secret", " stuff</thi", "nk> world", " <", "b>"]:
            yield p

    assert "".join([p async for p in without_reasoning(pieces())]) == "Hello world <b>"
