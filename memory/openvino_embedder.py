"""The sentence embedder run by OpenVINO instead of torch: an IR copy of a BERT model, and mem0's embedder for it.

With the default MODEL_BACKEND=openvino nothing else in a running bot needs torch; importing torch and
sentence-transformers for 384-d embeddings costs ~300 MB of resident memory and seconds at every start. On first
use the sentence-transformers folder (the bundled all-MiniLM-L6-v2 by default) is exported once to OpenVINO IR
with `openvino.convert_model` (that one step imports torch and transformers); later starts load the IR only.
`OpenVinoEmbedding` embeds as sentence-transformers does: the folder's own tokenizer (the `tokenizers` library),
cut to the model's `max_seq_length` with the closing [SEP] kept, mean-pooled over the tokens, normalized.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from memory.gguf_embedder import check_mean_pooled, read_json
from memory.mapped_files import release_pages

_log = logging.getLogger(__name__)

CONVERTER_VERSION = 1  # bump when `export_ir` writes something different, so an old copy is rebuilt
IR_FILE = "embedder.xml"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def exported_ir(model_dir: Path, cache_dir: Path) -> Path:
    """The IR copy of the BERT model in `model_dir`, exported on first use (a few seconds).

    The copy's folder name holds a hash of the model folder's path and of its weights' size and time, so a changed
    or reinstalled model is exported again.
    """
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise RuntimeError(f"embedder model {model_dir}: no model.safetensors there; the openvino embedder needs a "
                           "local sentence-transformers BERT folder (or use the sentence-transformers embedder)")
    stat = weights.stat()
    key = hashlib.sha256(repr((CONVERTER_VERSION, str(model_dir.resolve()), stat.st_size, stat.st_mtime_ns))
                         .encode()).hexdigest()[:12]
    target = cache_dir / f"embedder-openvino-{key}"
    if not (target / IR_FILE).is_file():
        export_ir(model_dir, target)
    return target / IR_FILE


def export_ir(model_dir: Path, target: Path) -> None:
    """Export the transformer of the sentence-transformers folder `model_dir` to `target` (made whole or not at all;
    processes sharing the folder may export at once: each writes its own copy, the first one finished is kept)."""
    import openvino as ov
    import torch
    from transformers import AutoModel

    _log.info("exporting the embedder %s to OpenVINO (once)", model_dir.name)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    example = {name: torch.ones(1, 8, dtype=torch.long) for name in INPUTS}
    with torch.no_grad(), warnings.catch_warnings(), _no_conversion_telemetry():
        # The tracer warns that shape checks become constants: they hold for any one text (tested).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        ir = ov.convert_model(model, example_input=example)
    ov.save_model(ir, str(partial / IR_FILE), compress_to_fp16=False)
    if target.exists() and not (target / IR_FILE).is_file():  # a folder left without its model
        shutil.rmtree(target, ignore_errors=True)
    try:
        partial.rename(target)
    except OSError:  # another process's copy came first
        shutil.rmtree(partial, ignore_errors=True)
        if not (target / IR_FILE).is_file():
            raise
    for stale in target.parent.glob("embedder-openvino-*"):  # an earlier model's (or version's) copy
        if stale != target and ".partial-" not in stale.name:
            shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def _no_conversion_telemetry() -> Iterator[None]:
    """OpenVINO's model conversion reports usage to Google Analytics unless CI=true (its only switch, read at each
    conversion), so nothing leaves the host: set for the conversion only."""
    before = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = before


class OpenVinoEmbedding:
    """mem0's embedder interface (`embed`, `embed_batch`) over a BERT model run by OpenVINO.

    One text at a time under a lock: the store calls it from its one worker thread anyway.
    """

    def __init__(self, model_dir: Path, cache_dir: Path, *, threads: int, dims: int) -> None:
        import openvino as ov
        from tokenizers import Tokenizer

        if not (model_dir / "tokenizer.json").is_file():
            raise RuntimeError(f"embedder model {model_dir}: no tokenizer.json there; the openvino embedder needs a "
                               "local sentence-transformers BERT folder")
        check_mean_pooled(model_dir, "the openvino embedder")
        config = read_json(model_dir / "sentence_bert_config.json")
        self.max_tokens = int(config.get("max_seq_length", 512))
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()  # cut by hand below, as sentence-transformers does
        ir = exported_ir(model_dir, cache_dir)
        compiled = ov.Core().compile_model(str(ir), "CPU",
                                           {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
        release_pages(ir.with_suffix(".bin"))  # compiled: the weights file's pages are not read again
        self._request = compiled.create_infer_request()
        self._inputs = {port.get_any_name() for port in compiled.inputs}
        found = compiled.outputs[0].get_partial_shape()[-1].get_length()
        if found != dims:
            raise RuntimeError(f"embedder model {model_dir}: gives {found}-d vectors, the store holds {dims}-d ones")
        self._lock = threading.Lock()

    def _ids(self, text: str) -> list[int]:
        ids = list(self._tokenizer.encode(text).ids)
        return ids[: self.max_tokens - 1] + ids[-1:] if len(ids) > self.max_tokens else ids

    def count_tokens(self, text: str) -> int:
        """How many tokens the model reads for `text` ([CLS] and [SEP] included), as `max_tokens` counts them."""
        return len(self._tokenizer.encode(text).ids)

    def embed(self, text: str, memory_action: str | None = None) -> list[float]:
        ids = np.array([self._ids(text)], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        with self._lock:
            hidden = self._request.infer({k: v for k, v in feeds.items() if k in self._inputs})[0]
        vector = np.asarray(hidden, dtype=np.float32)[0].mean(axis=0)  # one text: every token counts
        norm = float(np.linalg.norm(vector))
        return (vector / norm if norm else vector).tolist()

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        return [self.embed(text, memory_action) for text in texts]

    def close(self) -> None:
        self._request = None

