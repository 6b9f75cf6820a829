"""Generation with OpenVINO GenAI (wheels only: no compiler, no torch) from the model's OpenVINO IR.

The chat template and tokenizer come with the IR (made from the GGUF's metadata; see openvino_model.py). The
continuous-batching pipeline keeps the KV blocks of earlier prompts in a cache of fixed size, so a prompt that
starts like an earlier one (same memories and history) skips that start, even when other prompts ran between.
JSON-schema constrained decoding makes fact extraction always parseable; its first use compiles the grammar
engine (seconds), so it is warmed up at load, not during someone's first extraction.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bot.llm.base import ChatMessage, GenerationParams, ModelError
from bot.llm.openvino_model import IR_FILE
from memory.mapped_files import release_pages

KV_CACHE_BLOCKS = 512  # 32 tokens each: room for ~16k tokens of earlier prompts, allocated as used
NO_TOKEN_TIMEOUT_SECONDS = 600.0
_WARM_UP_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


class OpenVinoBackend:
    name = "openvino"
    reuses_prompt_prefix = True

    def __init__(self, ir_dir: Path, *, threads: int, context_tokens: int, activation_group: int) -> None:
        try:
            import openvino_genai as ov_genai
        except ImportError as exc:
            raise ModelError("OpenVINO GenAI is not installed: reinstall memorybot (./run.sh)") from exc
        self._ov = ov_genai
        scheduler = ov_genai.SchedulerConfig()
        scheduler.enable_prefix_caching = True
        scheduler.num_kv_blocks = KV_CACHE_BLOCKS  # a fixed size: the dynamic cache drops old prefixes
        scheduler.max_num_batched_tokens = context_tokens  # a whole prompt in one pass
        try:
            self.pipe = ov_genai.LLMPipeline(str(ir_dir), "CPU", scheduler_config=scheduler,
                                             INFERENCE_NUM_THREADS=threads,
                                             DYNAMIC_QUANTIZATION_GROUP_SIZE=activation_group)
        except RuntimeError as exc:
            raise ModelError(f"cannot load {ir_dir}: {exc}") from exc
        self.tokenizer = self.pipe.get_tokenizer()
        self.context_tokens = context_tokens
        warm_up = GenerationParams(max_new_tokens=4, json_schema=_WARM_UP_SCHEMA)
        for _ in self.stream([ChatMessage("user", "Answer with JSON.")], warm_up, lambda: False):
            pass
        release_pages((ir_dir / IR_FILE).with_suffix(".bin"))  # compiled: the weights file's pages are not read again

    def render(self, messages: list[ChatMessage]) -> str:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        return str(self.tokenizer.apply_chat_template(chat, add_generation_prompt=True))

    def count_tokens(self, text: str) -> int:
        return int(self.tokenizer.encode(text, add_special_tokens=False).input_ids.shape[1])

    def prompt_tokens(self, messages: list[ChatMessage]) -> int:
        return self.count_tokens(self.render(messages))

    def _config(self, params: GenerationParams) -> Any:
        config = self._ov.GenerationConfig(
            max_new_tokens=params.max_new_tokens, repetition_penalty=params.repetition_penalty,
            stop_strings=set(params.stop), include_stop_str_in_output=False, apply_chat_template=False,
            do_sample=params.temperature > 0,
        )
        if params.temperature > 0:
            config.temperature = params.temperature
        if params.json_schema is not None:
            config.structured_output_config = self._ov.StructuredOutputConfig(
                json_schema=json.dumps(params.json_schema))
        return config

    def stream(
        self, messages: list[ChatMessage], params: GenerationParams, should_stop: Callable[[], bool]
    ) -> Iterator[str]:
        """Generation runs on its own thread and hands pieces over a queue; it stops after the next token once
        `should_stop()` or the consumer closes this generator."""
        prompt, config = self.render(messages), self._config(params)
        if (size := self.count_tokens(prompt)) + params.max_new_tokens > self.context_tokens:
            raise ModelError(f"the prompt ({size} tokens) leaves no room for the reply in {self.context_tokens}")
        pieces: queue.Queue[object] = queue.Queue()
        closed = threading.Event()
        done = object()
        running, stop = self._ov.StreamingStatus.RUNNING, self._ov.StreamingStatus.STOP

        def on_piece(piece: str) -> Any:
            pieces.put(piece)
            return stop if closed.is_set() or should_stop() else running

        def generate() -> None:
            try:
                self.pipe.generate([prompt], config, on_piece)
            except Exception as exc:  # handed to the consumer
                pieces.put(exc)
            finally:
                pieces.put(done)

        worker = threading.Thread(target=generate, name="openvino-generate", daemon=True)
        worker.start()
        try:
            while (item := pieces.get(timeout=NO_TOKEN_TIMEOUT_SECONDS)) is not done:
                if isinstance(item, Exception):
                    raise ModelError(f"generation failed: {item}") from item
                if item:
                    yield str(item)
                if should_stop():  # the engine stops after the token it is working on; show none of it
                    return
        except queue.Empty:
            raise ModelError(f"no token for {NO_TOKEN_TIMEOUT_SECONDS:.0f} s; generation abandoned") from None
        finally:
            closed.set()
            worker.join(timeout=NO_TOKEN_TIMEOUT_SECONDS)  # it stops after its next token
