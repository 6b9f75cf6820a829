"""The OpenVINO embedder (the default bot's), for real: the bundled MiniLM exported once gives sentence-transformers'
vectors and tokens, and a store built on it never loads torch once the export exists."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memory.config import StoreConfig, bundled_embedder_path
from memory.openvino_embedder import OpenVinoEmbedding, exported_ir
from memory.store import MemoryStore, StoreError
from tests.memory.embedder_checks import TEXTS, assert_vectors_match_sentence_transformers
from tests.memory.test_mapped_files import resident_bytes

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def embedder(cache):
    embedder = OpenVinoEmbedding(Path(bundled_embedder_path()), cache, threads=2, dims=384)
    yield embedder
    embedder.close()


def test_vectors_match_sentence_transformers(embedder):
    assert_vectors_match_sentence_transformers(embedder)


def test_tokens_match_the_wordpiece_tokenizer(embedder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundled_embedder_path())
    for text in TEXTS:
        assert embedder.count_tokens(text) == len(tokenizer(text)["input_ids"])
    assert len(embedder._ids(TEXTS[-1])) == embedder.max_tokens == 256  # cut, [SEP] kept
    assert embedder._ids(TEXTS[-1])[-1] == tokenizer.sep_token_id


def test_a_loaded_embedder_keeps_little_of_its_weights_file_resident(cache, embedder):
    """Compiling reads the whole file; afterwards only the embedding rows texts look up are read (in place)."""
    loaded = OpenVinoEmbedding(Path(bundled_embedder_path()), cache, threads=1, dims=384)
    weights = exported_ir(Path(bundled_embedder_path()), cache).with_suffix(".bin")
    assert resident_bytes(weights) < weights.stat().st_size // 10
    loaded.embed("hello")
    loaded.close()


def test_the_export_happens_once(cache, embedder):
    assert len(list(cache.glob("embedder-openvino-*/embedder.xml"))) == 1
    OpenVinoEmbedding(Path(bundled_embedder_path()), cache, threads=1, dims=384).close()
    assert len(list(cache.glob("embedder-openvino-*"))) == 1


def test_the_export_sends_no_telemetry(tmp_path, monkeypatch):
    from openvino_telemetry.utils.sender import TelemetrySender

    from memory.openvino_embedder import export_ir

    sent = []
    monkeypatch.setattr(TelemetrySender, "send", lambda self, *args, **kwargs: sent.append(args))
    monkeypatch.delenv("CI", raising=False)
    (tmp_path / "embedder-openvino-old").mkdir()  # an earlier copy: replaced
    export_ir(Path(bundled_embedder_path()), tmp_path / "embedder-openvino-new")
    assert sent == [] and "CI" not in os.environ
    assert [p.name for p in tmp_path.iterdir()] == ["embedder-openvino-new"]


def test_refuses_a_model_of_another_width(cache):
    with pytest.raises(RuntimeError, match="384-d vectors, the store holds 768-d"):
        OpenVinoEmbedding(Path(bundled_embedder_path()), cache, threads=1, dims=768)


async def test_a_missing_embedder_model_is_a_clear_store_error(tmp_path):
    config = StoreConfig(directory=tmp_path / "memory", embedder="openvino", embedder_model=str(tmp_path / "nope"))
    with pytest.raises(StoreError, match="no tokenizer.json there"):
        async with MemoryStore(config):
            pass


def test_a_store_on_the_openvino_embedder_never_imports_torch(tmp_path, cache, embedder):
    script = f"""
import asyncio, sys
from pathlib import Path
from memory.config import StoreConfig
from memory.records import Source
from memory.store import MemoryStore

async def main():
    source = Source(platform="console", workspace="local", channel="c", message_id="m1", link=None,
                    time="2026-11-26T10:00:00+00:00")
    config = StoreConfig(directory=Path({str(tmp_path)!r}), embedder="openvino", embedder_cache=Path({str(cache)!r}))
    async with MemoryStore(config) as store:
        await store.add("u", "The user is vegetarian.", source, context="I'm vegetarian, by the way.")
        await store.add("u", "The user's dog is called Max.", source)
        found = await store.search("u", "what should I cook for dinner", 1, include_private=True)
        assert [r.text for r in found] == ["The user is vegetarian."], found
        assert await store.passages("word " * 400) and len(await store.passages("word " * 400)) > 1
    print(sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules))

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"




@pytest.mark.parametrize("change", ["cls pooling", "a dense layer"])
def test_a_model_whose_vectors_it_would_not_reproduce_is_refused(tmp_path, change):
    # it mean-pools and normalizes, nothing else: another model's stored vectors would silently not match
    bundled = Path(bundled_embedder_path())
    model = tmp_path / "model"
    model.mkdir()
    for item in bundled.iterdir():
        if item.name not in ("1_Pooling", "modules.json"):
            (model / item.name).symlink_to(item)
    (model / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": 384, "pooling_mode_cls_token": change == "cls pooling",
               "pooling_mode_mean_tokens": change != "cls pooling"}
    (model / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if change == "a dense layer":
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(RuntimeError, match="EMBEDDER_BACKEND=sentence_transformers"):
        OpenVinoEmbedding(model, tmp_path / "cache", threads=1, dims=384)
    assert not (tmp_path / "cache").exists()  # refused before any export
