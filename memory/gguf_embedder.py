"""The sentence embedder run by llama.cpp instead of torch: a GGUF copy of a BERT model, and mem0's embedder for it.

With MODEL_BACKEND=llama_cpp nothing else in the bot needs torch; importing torch and sentence-transformers
for 384-d embeddings would cost ~460 MB of resident memory. `convert_bert` writes the bundled
all-MiniLM-L6-v2 (safetensors, WordPiece vocabulary) as a GGUF with the same tensors, keys and vocabulary
llama.cpp's own `convert_hf_to_gguf.py` writes for it, reading the weights with numpy only.
`LlamaCppEmbedding` embeds like sentence-transformers does: the same tokens, cut to the model's
`max_seq_length` with the closing [SEP] kept, mean-pooled; vectors agree to cosine 0.9999.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

_log = logging.getLogger(__name__)

# Bump when `convert_bert` writes something different, so an old copy is rebuilt.
CONVERTER_VERSION = 1
_SPECIAL_TOKENS = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
# HF tensor name -> GGUF tensor name (as gguf's TensorNameMap gives for MODEL_ARCH.BERT); {i} is the layer.
_EMBEDDING_TENSORS = {
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "embeddings.position_embeddings.weight": "position_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "embeddings.LayerNorm.weight": "token_embd_norm.weight",
    "embeddings.LayerNorm.bias": "token_embd_norm.bias",
}
_LAYER_TENSORS = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}


def converted_gguf(model_dir: Path, cache_dir: Path) -> Path:
    """The GGUF copy of the BERT model in `model_dir`, converted on first use (about a second).

    The copy's name holds a hash of the folder's path and one of its files' sizes and times, so a changed or
    reinstalled model is converted again and its stale copy (and any conversion left half-done) removed.
    """
    if not (model_dir / "model.safetensors").is_file():
        raise RuntimeError(f"embedder model {model_dir}: no model.safetensors there; the llama.cpp embedder needs "
                           "a local sentence-transformers BERT folder or a .gguf file (or use the "
                           "sentence-transformers embedder)")
    folder = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:12]
    content = hashlib.sha256(repr([CONVERTER_VERSION] + [
        (name, stat.st_size, stat.st_mtime_ns)
        for name in _SOURCE_FILES if (stat := _stat(model_dir / name)) is not None
    ]).encode()).hexdigest()[:12]
    target = cache_dir / f"embedder-{folder}-{content}.gguf"
    if target.exists():
        return target
    _log.info("converting the embedder %s to GGUF for llama.cpp (once): %s", model_dir, target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_dir / f"{target.name}.partial-{os.getpid()}"
    try:
        convert_bert(model_dir, partial)
        partial.replace(target)
    except (KeyError, ValueError, OSError) as exc:
        raise RuntimeError(f"embedder model {model_dir}: cannot convert it for llama.cpp "
                           f"({type(exc).__name__}: {exc})") from exc
    finally:
        partial.unlink(missing_ok=True)
    for other in cache_dir.glob(f"embedder-{folder}-*"):
        if other != target:
            other.unlink(missing_ok=True)
    return target


_SOURCE_FILES = ("model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json",
                 "sentence_bert_config.json", "modules.json", "1_Pooling/config.json")


def _stat(path: Path) -> os.stat_result | None:
    return path.stat() if path.exists() else None


def check_mean_pooled(model_dir: Path, embedder: str) -> None:
    """Refuse a sentence-transformers folder whose vectors `embedder` would not reproduce: ours mean-pool the
    transformer's output and normalize, nothing else (a CLS-pooled model, or a dense layer after pooling, would
    give other vectors than the ones sentence-transformers stored)."""
    pooling = read_json(model_dir / "1_Pooling" / "config.json")
    if pooling and not pooling.get("pooling_mode_mean_tokens"):
        raise RuntimeError(f"{model_dir}: {embedder} needs a mean-pooled model (use EMBEDDER_BACKEND="
                           "sentence_transformers for this one)")
    stages = {m.get("type", "").rsplit(".", 1)[-1] for m in read_json(model_dir / "modules.json") or []}
    if stages - {"Transformer", "Pooling", "Normalize"}:
        raise RuntimeError(f"{model_dir}: {embedder} cannot run the stages "
                           f"{sorted(stages - {'Transformer', 'Pooling', 'Normalize'})} after pooling (use "
                           "EMBEDDER_BACKEND=sentence_transformers for this one)")


def convert_bert(model_dir: Path, target: Path) -> None:
    """Write the sentence-transformers BERT model in `model_dir` as an f32 GGUF llama.cpp can embed with."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model_type") != "bert":
        raise RuntimeError(f"{model_dir}: the llama.cpp embedder converts BERT models only, "
                           f"not {config.get('model_type')!r}")
    check_mean_pooled(model_dir, "the llama.cpp embedder")
    tokens = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = read_json(model_dir / "tokenizer_config.json")
    ids = {token: i for i, token in enumerate(tokens)}

    writer = gguf.GGUFWriter(str(target), "bert")
    writer.add_name(model_dir.name)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_token_type_count(config.get("type_vocab_size", 1))
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("jina-v2-en")  # what convert_hf_to_gguf.py detects for this WordPiece tokenizer
    # llama.cpp's WordPiece marks word starts with a phantom space instead of marking continuations with "##".
    writer.add_token_list([t if t in _SPECIAL_TOKENS else t[2:] if t.startswith("##") else "\u2581" + t
                           for t in tokens])
    writer.add_token_types([gguf.TokenType.CONTROL if t in _SPECIAL_TOKENS else gguf.TokenType.NORMAL
                            for t in tokens])
    writer.add_bos_token_id(ids["[CLS]"])
    writer.add_eos_token_id(ids["[SEP]"])
    writer.add_unk_token_id(ids["[UNK]"])
    writer.add_sep_token_id(ids["[SEP]"])
    writer.add_pad_token_id(ids["[PAD]"])
    writer.add_mask_token_id(ids["[MASK]"])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)
    writer.add_bool(gguf.Keys.Tokenizer.ADD_SEP, False)
    writer.add_bool("tokenizer.ggml.normalizer.lowercase", bool(tokenizer.get("do_lower_case", True)))

    weights = load_file(str(model_dir / "model.safetensors"))
    for name, array in _gguf_tensors(weights, config["num_hidden_layers"]):
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _gguf_tensors(weights: dict[str, np.ndarray], layers: int) -> list[tuple[str, np.ndarray]]:
    weights = {name.removeprefix("bert."): array for name, array in weights.items()}
    out = [(gguf_name, weights[name]) for name, gguf_name in _EMBEDDING_TENSORS.items()]
    for i in range(layers):
        for part, gguf_part in _LAYER_TENSORS.items():
            for kind in ("weight", "bias"):
                out.append((f"blk.{i}.{gguf_part}.{kind}", weights[f"encoder.layer.{i}.{part}.{kind}"]))
    return out


def read_json(path: Path) -> Any:
    """A JSON file of a model folder, or {} when the folder has none (also used by the OpenVINO embedder)."""
    return json.loads(path.read_text()) if path.exists() else {}


class LlamaCppEmbedding:
    """mem0's embedder interface (`embed`, `embed_batch`) over a GGUF BERT model run by llama.cpp.

    One text at a time under a lock: the store calls it from its one worker thread anyway.
    """

    def __init__(self, model_dir: Path, cache_dir: Path, *, threads: int, dims: int) -> None:
        try:
            import llama_cpp
        except ImportError as exc:  # depends on the installed extras
            raise RuntimeError("the llama.cpp embedder needs llama-cpp-python: pip install -e '.[llama]' "
                               "(or use the sentence-transformers embedder)") from exc

        if model_dir.suffix == ".gguf" and not model_dir.is_file():
            raise RuntimeError(f"embedder model {model_dir}: no such file")
        gguf_path = model_dir if model_dir.suffix == ".gguf" else converted_gguf(model_dir, cache_dir)
        st_config = read_json(model_dir / "sentence_bert_config.json") if model_dir.is_dir() else {}
        context = int(st_config.get("max_seq_length", 512))
        try:
            self._llama = llama_cpp.Llama(
                str(gguf_path), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                n_ctx=context, n_batch=context, n_ubatch=context, n_threads=threads, n_threads_batch=threads,
                verbose=False,
            )
        except ValueError as exc:  # llama-cpp-python's "Failed to load model from file"
            raise RuntimeError(f"embedder model {gguf_path}: llama.cpp cannot load it ({exc})") from exc
        if (found := self._llama.n_embd()) != dims:
            self._llama.close()
            raise RuntimeError(f"embedder model {gguf_path}: gives {found}-d vectors, the store holds {dims}-d ones")
        self.max_tokens = min(context, self._llama._model.n_ctx_train())
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        """How many tokens the model reads for `text` ([CLS] and [SEP] included), as `max_tokens` counts them."""
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def embed(self, text: str, memory_action: str | None = None) -> list[float]:
        import llama_cpp

        tokens = self._llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        if len(tokens) > self.max_tokens:  # as sentence-transformers truncates: keep [CLS] ... [SEP]
            tokens = tokens[: self.max_tokens - 1] + tokens[-1:]
        with self._lock:
            # The same calls llama-cpp-python's Llama.embed makes, for a token list it cannot take.
            llama = self._llama
            llama._batch.reset()
            llama._batch.add_sequence(tokens, 0, True)
            llama._ctx.kv_cache_clear()
            llama._ctx.decode(llama._batch)
            vector = np.array(llama_cpp.llama_get_embeddings_seq(llama._ctx.ctx, 0)[: llama.n_embd()],
                              dtype=np.float32)
            llama._batch.reset()
        norm = float(np.linalg.norm(vector))
        return (vector / norm if norm else vector).tolist()

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        return [self.embed(text, memory_action) for text in texts]

    def close(self) -> None:
        self._llama.close()
