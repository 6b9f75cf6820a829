"""Generation with transformers, in process, on the CPU in bfloat16.

A GGUF file is dequantized by transformers on load (~40 s for the default model), so the result is
saved once as plain safetensors under `DATA_DIR/models/<name>-bf16`, which reloads in a few seconds.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bot.llm.base import ChatMessage, GenerationParams, ModelError

_log = logging.getLogger(__name__)


def _is_saved_model(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize `gguf` and save it as a bf16 safetensors model with its tokenizer in `target`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _log.info("converting %s to %s (first start only; takes about a minute)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # Dequantized weights are plain tensors now: drop the quantizer so save_pretrained writes them as such.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)


STREAM_TIMEOUT_SECONDS = 600.0  # longest wait for one token, even on a machine busy with other work


class TransformersBackend:
    """A causal LM and its tokenizer; `stream` runs `generate` and yields decoded text pieces."""

    name = "transformers"
    reuses_prompt_prefix = False

    def __init__(self, source: str | Path, *, threads: int, context_tokens: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load model from {source}: {exc}") from exc
        self.model.eval()
        self.context_tokens = context_tokens

    def render(self, messages: list[ChatMessage]) -> str:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        return str(self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_tokens(self, messages: list[ChatMessage]) -> int:
        return self.count_tokens(self.render(messages))

    def stream(
        self, messages: list[ChatMessage], params: GenerationParams, should_stop: Callable[[], bool]
    ) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        inputs = self.tokenizer(self.render(messages), return_tensors="pt", add_special_tokens=False)
        # The timeout turns a generate thread that died without ending the stream into an error, not a hang.
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=STREAM_TIMEOUT_SECONDS)
        stop_now = threading.Event()

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return stop_now.is_set() or should_stop()

        kwargs: dict[str, Any] = dict(
            **inputs,
            streamer=streamer,
            max_new_tokens=params.max_new_tokens,
            repetition_penalty=params.repetition_penalty,
            stopping_criteria=StoppingCriteriaList([_Stop()]),
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as exc:  # reported to the consumer below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, name="generate", daemon=True)
        worker.start()
        text = ""
        finished = False
        try:
            for piece in streamer:
                if not piece:
                    continue
                text += piece
                cut = _stop_index(text, params.stop)
                if cut is not None:
                    tail = piece[: len(piece) - (len(text) - cut)]
                    if tail:
                        yield tail
                    break
                yield piece
            else:
                finished = True
        except queue.Empty:
            raise ModelError(f"no token for {STREAM_TIMEOUT_SECONDS:.0f} s; generation abandoned") from None
        finally:
            stop_now.set()
            if not finished and worker.is_alive():
                for _ in streamer:  # generate stops at the next token and ends the stream
                    pass
            worker.join()
        if failure:
            raise ModelError(f"generation failed: {failure[0]}") from failure[0]


def _stop_index(text: str, stops: tuple[str, ...]) -> int | None:
    found = [text.find(s) for s in stops if s and s in text]
    return min(found) if found else None
