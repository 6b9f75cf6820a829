from adapters.streaming import StreamingMessage, render_stream, split_message


def test_short_text_is_one_part():
    assert split_message("hello", 2000) == ["hello"]


def test_long_text_splits_at_line_breaks_within_limit():
    text = "\n".join(f"line {i} " + "x" * 50 for i in range(100))
    parts = split_message(text, 500)
    assert all(len(p) <= 500 for p in parts)
    assert "".join(p.replace("\n", "") for p in parts) == text.replace("\n", "")


def test_code_blocks_are_closed_and_reopened():
    code = "```python\n" + "\n".join(f"print({i})" for i in range(300)) + "\n```"
    parts = split_message("Here:\n" + code + "\nDone.", 400)
    assert len(parts) > 1
    for part in parts:
        assert len(part) <= 400
        assert part.count("```") % 2 == 0
    assert parts[1].startswith("```python")


async def test_edits_are_throttled_and_final_text_is_shown():
    now = [0.0]
    sent, edits = [], []

    async def send(text):
        sent.append(text)
        return len(sent) - 1

    async def edit(handle, text):
        edits.append((handle, text))

    message = StreamingMessage(send, edit, limit=2000, interval=1.0, clock=lambda: now[0])
    await message.update("a")
    await message.update("ab")  # too soon: no edit
    now[0] = 1.5
    await message.update("abc")
    await message.update("abcd", final=True)
    assert sent == ["a"]
    assert edits == [(0, "abc"), (0, "abcd")]


async def test_render_stream_returns_full_text():
    async def deltas():
        for piece in ["Hello", ", ", "world"]:
            yield piece

    shown = []

    async def send(text):
        shown.append(text)
        return 0

    async def edit(handle, text):
        shown.append(text)

    assert await render_stream(deltas(), send, edit, limit=100) == "Hello, world"
    assert shown[-1] == "Hello, world"
