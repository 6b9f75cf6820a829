"""The OpenVINO GenAI backend (the default): preparing a GGUF for it, and the bundled model on it, for real."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

from bot.app import MemoryBot
from bot.extraction import FactExtractor
from bot.llm import load_backend, resolve_openvino
from bot.llm.base import ChatMessage, GenerationParams
from bot.llm.openvino_model import IR_FILE, MANIFEST, is_prepared, is_prepared_from, write_as_f16
from bot.llm.runner import LocalModel
from tests.bot.helpers import RecordingReply, message
from tests.conftest import settings_for
from tests.memory.test_mapped_files import resident_bytes


def write_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, GGMLQuantizationType]]) -> None:
    writer = gguf.GGUFWriter(path, arch="qwen2")
    writer.add_uint32("qwen2.context_length", 32)
    for name, (values, kind) in tensors.items():
        raw = values if kind == GGMLQuantizationType.F32 else quantize(values, kind)
        writer.add_tensor(name, raw, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_quantized_tensors_are_written_as_the_same_values_in_f16(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    kinds = {"q5": GGMLQuantizationType.Q5_0, "q8": GGMLQuantizationType.Q8_0, "norm": GGMLQuantizationType.F32}
    tensors = {name: (rng.normal(size=(4, 256) if name != "norm" else 256).astype(np.float32), kind)
               for name, kind in kinds.items()}
    write_gguf(tmp_path / "q.gguf", tensors)
    write_as_f16(tmp_path / "q.gguf", tmp_path / "f16.gguf")
    source, written = gguf.GGUFReader(tmp_path / "q.gguf"), gguf.GGUFReader(tmp_path / "f16.gguf")
    assert written.get_field("qwen2.context_length").contents() == 32
    for before, after in zip(source.tensors, written.tensors, strict=True):
        expected = dequantize(np.asarray(before.data), before.tensor_type)
        assert after.name == before.name and list(after.shape) == list(before.shape)
        if before.tensor_type == GGMLQuantizationType.F32:
            assert after.tensor_type == GGMLQuantizationType.F32
        else:
            assert after.tensor_type == GGMLQuantizationType.F16
        assert np.array_equal(np.asarray(after.data), expected.astype(after.data.dtype))


def test_a_prepared_model_is_used_only_for_its_own_source_and_format(tmp_path: Path) -> None:
    source = tmp_path / "model.gguf"
    source.write_bytes(b"x" * 10)
    ir_dir = tmp_path / "ir"
    ir_dir.mkdir()
    for name in (IR_FILE, "openvino_tokenizer.xml", "openvino_detokenizer.xml"):
        (ir_dir / name).write_text("<net/>")
    assert is_prepared(ir_dir) and not is_prepared_from(ir_dir, source, "int4")  # no manifest: not ours
    (ir_dir / MANIFEST).write_text(json.dumps({"source": "model.gguf", "source_bytes": 10, "weights": "int4"}))
    assert is_prepared_from(ir_dir, source, "int4")
    assert not is_prepared_from(ir_dir, source, "int8")
    source.write_bytes(b"x" * 11)  # another file under the same name
    assert not is_prepared_from(ir_dir, source, "int4")


def test_the_bundled_model_is_prepared_once_with_int8_weights(model_data_dir: Path) -> None:
    ir_dir = resolve_openvino(settings_for(model_data_dir))
    manifest = json.loads((ir_dir / MANIFEST).read_text())
    assert manifest["weights"] == "int8" and manifest["source"] == "qwen2.5-coder-0.5b-instruct.gguf"
    assert not (ir_dir.parent / f"{ir_dir.name}.partial").exists()
    assert resolve_openvino(settings_for(model_data_dir)) == ir_dir  # found, not made again
    assert sum(f.stat().st_size for f in ir_dir.iterdir()) < 700_000_000  # int8: well under the 0.5B's f16 size


@pytest.fixture(scope="module")
def backend(model_data_dir):
    return load_backend(settings_for(model_data_dir, model_backend="openvino", context_tokens=2048))


@pytest.mark.slow
def test_streams_with_the_models_chat_template_and_stops(backend) -> None:
    messages = [ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", "Say hello.")]
    assert "<|im_start|>assistant" in backend.render(messages)
    pieces = list(backend.stream(messages, GenerationParams(max_new_tokens=20), lambda: False))
    assert len(pieces) > 1 and "".join(pieces).strip()
    seen: list[str] = []
    counting = [ChatMessage("user", "Count from 1 to 100, one number per line.")]
    for piece in backend.stream(counting, GenerationParams(max_new_tokens=200), lambda: len(seen) >= 3):
        seen.append(piece)
    assert len(seen) == 3
    stopped = "".join(backend.stream(counting, GenerationParams(max_new_tokens=60, stop=("5",)), lambda: False))
    assert "4" in stopped and "5" not in stopped


@pytest.mark.slow
def test_the_running_model_keeps_little_of_its_weights_file_resident(backend, model_data_dir: Path) -> None:
    weights = (resolve_openvino(settings_for(model_data_dir)) / IR_FILE).with_suffix(".bin")
    list(backend.stream([ChatMessage("user", "Say hello.")], GenerationParams(max_new_tokens=8), lambda: False))
    assert resident_bytes(weights) < weights.stat().st_size // 10  # compiling reads ~70% of it


@pytest.mark.slow
def test_a_prompt_that_starts_like_an_earlier_one_starts_sooner(backend) -> None:
    facts = " ".join(f"Fact {i}: the user likes item {i}." for i in range(60))
    chat = [ChatMessage("system", f"You are a helpful assistant. {facts}"), ChatMessage("user", "Hi!")]
    params = GenerationParams(max_new_tokens=1)

    def first_token_seconds(messages: list[ChatMessage]) -> float:
        started = time.perf_counter()
        next(iter(backend.stream(messages, params, lambda: False)), None)
        return time.perf_counter() - started

    cold = first_token_seconds(chat)
    list(backend.stream([ChatMessage("user", "Extract facts as JSON: I live in Porto.")], params, lambda: False))
    warm = first_token_seconds([*chat[:1], ChatMessage("user", "And what else?")])
    assert backend.reuses_prompt_prefix and warm < cold / 2, (cold, warm)


@pytest.mark.slow
async def test_constrained_extraction_always_parses(backend) -> None:
    extractor = FactExtractor(LocalModel(backend))
    for text in ["I'm vegetarian and I have two cats", "write me a poem", "I moved to Porto last year"]:
        facts = await extractor.extract(text, datetime(2026, 11, 26, tzinfo=UTC))  # raises if invalid
        assert isinstance(facts, list)


@pytest.mark.slow
async def test_the_bot_answers_and_learns_on_openvino(real_settings) -> None:
    settings = settings_for(real_settings.data_dir, model_backend="openvino", embedder_backend="", max_new_tokens=40)
    async with MemoryBot(settings) as bot:
        reply = RecordingReply()
        await bot.handle(message("Hi! I live in Lisbon and I keep bees."), reply)
        assert reply.streamed and reply.streamed[0].strip() and not reply.sent
        await bot.writeback.drain(timeout=300)
