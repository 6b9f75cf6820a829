"""The llama.cpp embedder, for real: the bundled MiniLM converted to GGUF gives sentence-transformers' vectors,
and a store built on it never loads torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memory.config import StoreConfig, bundled_embedder_path
from memory.records import Source
from memory.store import MemoryStore, StoreError
from tests.memory.embedder_checks import TEXTS, assert_vectors_match_sentence_transformers

pytest.importorskip("llama_cpp")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    from memory.gguf_embedder import LlamaCppEmbedding

    embedder = LlamaCppEmbedding(Path(bundled_embedder_path()), tmp_path_factory.mktemp("cache"), threads=2, dims=384)
    yield embedder
    embedder.close()


def test_vectors_match_sentence_transformers(embedder):
    assert_vectors_match_sentence_transformers(embedder)


def test_tokens_match_the_wordpiece_tokenizer(embedder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundled_embedder_path())
    for text in TEXTS[:4]:
        assert embedder._llama.tokenize(text.encode(), add_bos=True, special=False) == tokenizer(text)["input_ids"]


def test_conversion_happens_once_per_model_version(tmp_path):
    import shutil

    from memory.gguf_embedder import converted_gguf

    cache = tmp_path / "cache"
    model_dir = Path(bundled_embedder_path())
    first = converted_gguf(model_dir, cache)
    stamp = first.stat().st_mtime_ns
    assert converted_gguf(model_dir, cache) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in cache.iterdir()] == [first.name]  # no partial file left behind

    copy = tmp_path / "model"  # another folder of the same name keeps its own copy
    shutil.copytree(model_dir, copy)
    other = converted_gguf(copy, cache)
    assert other != first and sorted(cache.iterdir()) == sorted([first, other])
    config = json.loads((copy / "sentence_bert_config.json").read_text())
    (copy / "sentence_bert_config.json").write_text(json.dumps({**config, "max_seq_length": 128}))
    changed = converted_gguf(copy, cache)  # a changed model is converted again; its stale copy goes
    assert changed not in (first, other) and sorted(cache.iterdir()) == sorted([first, changed])


def test_rejects_a_model_it_cannot_convert(tmp_path):
    from memory.gguf_embedder import convert_bert

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(RuntimeError, match="BERT models only"):
        convert_bert(tmp_path, tmp_path / "out.gguf")


def test_refuses_a_model_of_another_width(model_data_dir, tmp_path):
    from memory.gguf_embedder import LlamaCppEmbedding

    chat_model = next((model_data_dir / "models").glob("qwen2.5-coder-0.5b*.gguf"))
    with pytest.raises(RuntimeError, match="896-d vectors, the store holds 384-d ones"):
        LlamaCppEmbedding(chat_model, tmp_path, threads=2, dims=384)


async def test_a_missing_embedder_model_is_a_clear_store_error(tmp_path):
    config = StoreConfig(directory=tmp_path / "memory", embedder="llama_cpp", embedder_model=str(tmp_path / "nope"))
    with pytest.raises(StoreError, match="no model.safetensors there"):
        async with MemoryStore(config):
            pass


async def test_store_on_the_llama_embedder(tmp_path):
    source = Source(platform="console", workspace="local", channel="terminal", message_id="m1",
                    link=None, time="2026-11-26T10:00:00+00:00")
    config = StoreConfig(directory=tmp_path / "memory", embedder="llama_cpp", embedder_cache=tmp_path / "models")
    async with MemoryStore(config) as store:
        await store.add("console:local:dana", "The user is vegetarian.", source)
        await store.add("console:local:dana", "The user's dog is called Max.", source)
        found = await store.search("console:local:dana", "what should I cook for dinner", 1, include_private=True)
        assert [r.text for r in found] == ["The user is vegetarian."]
    async with MemoryStore(config) as store:  # reopened: the converted copy is reused
        assert len(await store.list("console:local:dana")) == 2
    assert len(list((tmp_path / "models").glob("*.gguf"))) == 1


def test_a_store_on_the_llama_embedder_never_imports_torch(tmp_path):
    script = f"""
import asyncio, sys
from pathlib import Path
from memory.config import StoreConfig
from memory.records import Source
from memory.store import MemoryStore, StoreError

async def main():
    source = Source(platform="console", workspace="local", channel="c", message_id="m1", link=None,
                    time="2026-11-26T10:00:00+00:00")
    async with MemoryStore(StoreConfig(directory=Path({str(tmp_path)!r}), embedder="llama_cpp")) as store:
        await store.add("u", "The user is vegetarian.", source, context="I'm vegetarian, by the way.")
        assert await store.search("u", "food", 1, include_private=True)
    print(sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules))

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_command_line_reports_a_missing_embedder_model_without_a_traceback(tmp_path):
    env = {**os.environ, "DATA_DIR": str(tmp_path), "EMBEDDER_BACKEND": "llama_cpp",
           "EMBEDDER_MODEL": str(tmp_path / "nope")}
    out = subprocess.run([sys.executable, "-m", "adapters.cli", "--env-file", "/dev/null", "memories",
                          "--platform", "console", "--user", "dana"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "no model.safetensors there" in out.stderr and "Traceback" not in out.stderr
