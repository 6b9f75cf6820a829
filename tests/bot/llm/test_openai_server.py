"""The OpenAI-compatible backend against a real model server: llama-cpp-python's (`python -m llama_cpp.server`,
the llama extra) serving the bundled GGUF on 127.0.0.1, as a GPU deployment would serve a model with vLLM.

The fake server (tests/fakes/openai_server.py) checks what the backend asks for; these check that a real server
answers it: streaming, stop strings, the server's chat template, schema-constrained extraction, errors.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from bot.app import MemoryBot
from bot.extraction import FactExtractor
from bot.llm import load_backend, resolve_gguf
from bot.llm.base import ChatMessage, GenerationParams, ModelError
from bot.llm.runner import LocalModel
from bot.settings import load_settings
from tests.bot.helpers import RecordingReply, message
from tests.servers.processes import stop_all

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (the llama extra: ./run.sh test has it)")
pytestmark = pytest.mark.slow

SERVED_NAME = "qwen-served"  # the name the server answers to (--model_alias), given to the bot as MODEL
SERVER_CONTEXT = 4096  # above CONTEXT_TOKENS (2048): the backend only estimates token counts
START_TIMEOUT = 180.0
SAID_AT = datetime(2026, 11, 26, tzinfo=UTC)


@dataclass
class Server:
    process: subprocess.Popen
    base_url: str
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-30:])


def _wait_until_serving(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {server.process.returncode} (is the llama extra's server part "
                        f"installed?):\n{_log_tail(server.log)}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/models", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"llama_cpp.server did not answer /v1/models within {START_TIMEOUT:.0f} s:\n{_log_tail(server.log)}")


@contextmanager
def llama_server(gguf: Path, log: Path, *, context: int = SERVER_CONTEXT) -> Iterator[Server]:
    """llama-cpp-python's server on a free port of 127.0.0.1, stopped on leaving."""
    port = _free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", SERVED_NAME,
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(context), "--n_threads", "2",
               "--n_threads_batch", "2", "--use_mlock", "False"]  # (mlock fails quietly under a low memlock limit)
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}/v1", log)
    try:
        _wait_until_serving(server)
        yield server
    finally:
        stop_all([process], timeout=15)


@pytest.fixture(scope="module")
def gguf(model_data_dir: Path) -> Path:
    return resolve_gguf(load_settings(env_file=None, data_dir=model_data_dir, model_backend="llama_cpp"))


@pytest.fixture(scope="module")
def server(gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with llama_server(gguf, tmp_path_factory.mktemp("llama-server") / "server.log") as running:
        yield running


@pytest.fixture
def backend(server: Server, make_settings):
    """memorybot's OpenAI backend as the settings make it (a new one per test: it learns the server's dialect)."""
    return load_backend(make_settings(model_backend="openai", openai_base_url=server.base_url, model=SERVED_NAME))


COUNTING = [ChatMessage("system", "You are a helpful assistant."),
            ChatMessage("user", "Count from 1 to 10, separated by commas. Only the numbers.")]


def test_a_reply_streams_token_by_token(backend):
    pieces = list(backend.stream(COUNTING, GenerationParams(max_new_tokens=40), lambda: False))
    assert len(pieces) >= 10 and all(len(piece) <= 8 for piece in pieces), pieces  # a token a piece, not one lump
    assert "1, 2, 3" in "".join(pieces)


def test_generation_ends_before_a_stop_string(backend):
    text = "".join(backend.stream(COUNTING, GenerationParams(max_new_tokens=40, stop=("5",)), lambda: False))
    assert "4" in text and "5" not in text and "6" not in text, text


def test_should_stop_ends_generation_and_the_server_serves_the_next_request(backend):
    seen: list[str] = []
    messages = [ChatMessage("user", "Count from 1 to 200, one number per line.")]
    for piece in backend.stream(messages, GenerationParams(max_new_tokens=400), lambda: len(seen) >= 3):
        seen.append(piece)
    assert len(seen) == 3
    started = time.monotonic()  # the server stopped the abandoned generation instead of finishing 400 tokens
    assert "".join(backend.stream([ChatMessage("user", "Say hi.")], GenerationParams(max_new_tokens=8),
                                  lambda: False)).strip()
    assert time.monotonic() - started < 60


def test_the_server_applies_the_ggufs_own_chat_template(server, gguf, backend):
    """The backend sends messages; the server renders them with the template in the GGUF's metadata (Qwen's adds
    its default system prompt when there is none): the prompt it reports is exactly that rendering."""
    import openai
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    chat = [{"role": "user", "content": "Say hello."}]
    vocab = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    template = Jinja2ChatFormatter(template=vocab.metadata["tokenizer.chat_template"],
                                   eos_token=vocab.detokenize([vocab.token_eos()]).decode(errors="ignore"),
                                   bos_token=vocab.detokenize([vocab.token_bos()]).decode(errors="ignore"))
    rendered = template(messages=chat).prompt
    assert "You are Qwen" in rendered  # so a plain ChatML rendering would count fewer tokens
    expected = len(vocab.tokenize(rendered.encode(), add_bos=True, special=True))

    client = openai.OpenAI(base_url=server.base_url, api_key="unused")
    answer = client.chat.completions.create(model=SERVED_NAME, messages=chat, max_tokens=4, temperature=0)  # type: ignore[arg-type]
    assert answer.usage is not None and answer.usage.prompt_tokens == expected

    reply = "".join(backend.stream([ChatMessage(**m) for m in chat], GenerationParams(max_new_tokens=48),
                                   lambda: False))
    assert reply.strip() and "<|im_" not in reply and "assistant\n" not in reply  # one turn, its markers not shown


def test_the_server_refuses_openais_json_schema_form(server):
    """What the backend works around (llama-cpp-python 0.3.36): `response_format` may only be text or json_object
    (a schema goes beside the type), and the validation error comes back as a 500."""
    import openai

    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError, match="response_format") as refused:
        client.chat.completions.create(
            model=SERVED_NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
            response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}})
    assert refused.value.status_code == 500


def test_output_follows_the_json_schema(backend):
    """The schema constrains decoding: a request the model would answer in prose comes back as the schema's JSON."""
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    params = GenerationParams(max_new_tokens=24, json_schema=schema)
    for _ in range(2):  # the first is refused in OpenAI's form and asked again in llama-cpp-python's; the next is not
        text = "".join(backend.stream([ChatMessage("user", "Say hello to me.")], params, lambda: False))
        jsonschema.validate(json.loads(text), schema)


async def test_extraction_returns_valid_facts(backend):
    extractor = FactExtractor(LocalModel(backend))
    facts = await extractor.extract("I live in Lisbon and I have a dog called Max.", SAID_AT)
    assert any("Lisbon" in fact for fact in facts), facts
    assert await extractor.extract("lol ok", SAID_AT) == []


def test_a_prompt_longer_than_the_servers_window_is_a_model_error(backend):
    """The server answers it with an empty stream (no chunk, no finish reason), not with an error status."""
    messages = [ChatMessage("user", "Summarise this: " + "the quick brown fox jumps " * 1500)]
    with pytest.raises(ModelError, match="context window"):
        list(backend.stream(messages, GenerationParams(max_new_tokens=16), lambda: False))


def test_a_server_that_goes_down_is_a_model_error_not_a_hang(gguf, make_settings, tmp_path):
    with llama_server(gguf, tmp_path / "server.log", context=1024) as own:
        backend = load_backend(make_settings(model_backend="openai", openai_base_url=own.base_url,
                                             model=SERVED_NAME))
        seen: list[str] = []
        started = time.monotonic()
        with pytest.raises(ModelError, match="model server failed"):  # killed mid-reply
            for piece in backend.stream([ChatMessage("user", "Count from 1 to 200, one number per line.")],
                                        GenerationParams(max_new_tokens=400), lambda: False):
                seen.append(piece)
                if len(seen) == 2:
                    own.process.kill()
        assert 2 <= len(seen) < 400 and time.monotonic() - started < 60
    started = time.monotonic()
    with pytest.raises(ModelError, match="model server failed"):  # and nobody listening any more
        list(backend.stream([ChatMessage("user", "hi")], GenerationParams(max_new_tokens=4), lambda: False))
    assert time.monotonic() - started < 30


async def test_the_bot_replies_and_learns_through_the_server(server, make_settings):
    settings = make_settings(model_backend="openai", openai_base_url=server.base_url, model=SERVED_NAME,
                             max_new_tokens=64)
    async with MemoryBot(settings) as bot:
        reply = RecordingReply()
        await bot.handle(message("I live in Lisbon and I have a dog called Max."), reply)
        assert reply.streamed and reply.streamed[0].strip() and len(reply.deltas[0]) > 1, reply.sent
        await bot.writeback.drain()
        facts = [r.text for r in (await bot.memories.controls.list(message("x").user)).records]
        assert any("Lisbon" in fact for fact in facts), facts

        answer = RecordingReply()
        await bot.handle(message("Which city do I live in?", message_id="m2"), answer)
        assert "lisbon" in answer.streamed[0].lower(), answer.streamed
