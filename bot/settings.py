"""All configuration in one typed place, read from the environment and `.env`.

Every field's environment variable is its name in upper case. `.env.example` lists each one with its
default and meaning (a test keeps the two in step). A bad value is a `SettingsError` naming the variable.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from dotenv import dotenv_values

from memory.recall import CHANNELS

MIN_PROMPT_TOKENS = 512  # the smallest prompt (instructions, a message, fact extraction) worth running


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class Secret(str):
    """A string that never shows its value in logs, reprs or tracebacks."""

    def __repr__(self) -> str:
        return "Secret('****')" if self else "Secret('')"

    def reveal(self) -> str:
        return str.__str__(self)

    def __str__(self) -> str:
        return "****" if self else ""


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    # --- storage
    data_dir: Path = _setting(Path("data"), "Folder for all state: model cache, vector store, queues.")
    log_level: str = _setting("INFO", "Python logging level (DEBUG, INFO, WARNING, ERROR).")

    # --- local model
    model: str = _setting(
        "qwen2.5-coder-0.5b",
        "qwen2.5-coder-0.5b, qwen2.5-coder-1.5b (quality extra), a transformers folder or cached hub id, a .gguf path, "
        "or the served model's name (openai backend).",
    )
    model_backend: str = _setting(
        "transformers",
        "Generation backend: transformers, llama_cpp (llama extra, GGUF models) or openai (a model server).",
    )
    openai_base_url: str = _setting("", "For MODEL_BACKEND=openai: the server's URL, e.g. http://127.0.0.1:8000/v1.")
    openai_api_key: Secret = _setting(Secret(""), "For MODEL_BACKEND=openai: the server's API key, if it needs one.")
    model_threads: int = _setting(2, "CPU threads for the model and the embedder.")
    max_new_tokens: int = _setting(256, "Longest reply the model may write, in tokens.")
    temperature: float = _setting(0.0, "Sampling temperature; 0 means greedy decoding.")
    repetition_penalty: float = _setting(1.15, "Penalty against repeating tokens (stops greedy loops).")
    context_tokens: int = _setting(2048, "Prompt budget in tokens (system, memories, history, message).")
    generation_queue_size: int = _setting(8, "Replies that may wait for the model before users are told to retry.")
    max_input_chars: int = _setting(4000, "Longer messages are cut to this many characters for the model.")
    history_turns: int = _setting(6, "Recent exchanges of the same conversation kept in the prompt.")
    bot_name: str = _setting("memorybot", "The name the bot uses for itself in the system prompt.")

    # --- memory
    memory_top_k: int = _setting(8, "How many memories are recalled for a message at most.")
    memory_token_budget: int = _setting(400, "Token budget for recalled memories in the prompt.")
    memory_min_score: float = _setting(0.1, "Recalled memories need at least this similarity (0..1).")
    memory_keep_messages: bool = _setting(
        True, "Also keep the user's own messages (split into passages) as memories beside the facts learned from "
              "them; false keeps facts only.")
    memory_recall_channels: frozenset[str] = _setting(
        frozenset({"dense", "keyword", "time"}),
        "Recall channels fused for each message: dense (meaning), keyword (shared words; PostgreSQL and embedded "
        "store), time (a time the message names), entity (names and numbers; off by default: it did not help).")
    memory_ttl_days: int = _setting(0, "Days a memory is kept after it was said, fixed when it is learned; "
                                       "expired ones are never recalled and are purged daily. 0: forever.")
    embedder_model: str = _setting(
        "",
        "Sentence-embedding model (384-d): a sentence-transformers folder; for the llama_cpp embedder a BERT "
        "folder with model.safetensors, or a .gguf. Empty uses the bundled all-MiniLM-L6-v2.",
    )
    embedder_backend: str = _setting(
        "",
        "Embedder runtime: sentence_transformers or llama_cpp (llama extra; no torch in the process). "
        "Empty follows MODEL_BACKEND: llama_cpp with llama_cpp, otherwise sentence_transformers.",
    )
    vector_store: str = _setting("qdrant", "Vector store provider: qdrant or pgvector.")
    qdrant_url: str = _setting("", "Qdrant server URL; empty uses embedded Qdrant under DATA_DIR.")
    qdrant_api_key: Secret = _setting(Secret(""), "API key for the Qdrant server, if it needs one.")
    pgvector_url: Secret = _setting(Secret(""), "postgresql:// URL for the pgvector provider.")
    writeback_max_backoff_seconds: float = _setting(300.0, "Longest wait between retries of a failing write-back.")
    writeback_quiet_seconds: float = _setting(
        3.0, "Learning starts once no reply has run for this long (at most a minute later), so it never slows a chat."
    )

    # --- access control (applies to every platform)
    allowed_users: frozenset[str] = _setting(frozenset(), "Comma-separated user ids; empty allows everyone.")
    blocked_users: frozenset[str] = _setting(frozenset(), "Comma-separated user ids the bot ignores.")
    allowed_channels: frozenset[str] = _setting(frozenset(), "Comma-separated channel ids; empty allows all.")
    blocked_channels: frozenset[str] = _setting(frozenset(), "Comma-separated channel ids the bot ignores.")
    allowed_roles: frozenset[str] = _setting(frozenset(), "Comma-separated role ids; empty allows all (Discord).")
    blocked_roles: frozenset[str] = _setting(frozenset(), "Comma-separated role ids the bot ignores (Discord).")
    allow_dms: bool = _setting(True, "Answer direct messages.")
    admin_users: frozenset[str] = _setting(frozenset(),
                                           "Comma-separated user ids always let in, even when ALLOWED_USERS is set.")
    rate_limit_messages: int = _setting(10, "Messages per user per window; 0 turns the limit off.")
    rate_limit_window_seconds: float = _setting(60.0, "Length of the rate-limit window in seconds.")

    # --- Discord
    discord_token: Secret = _setting(Secret(""), "Discord bot token (memorybot discord).")
    discord_respond_channels: frozenset[str] = _setting(
        frozenset(), "Channel ids where the bot answers every message, not only mentions."
    )

    # --- Slack
    slack_bot_token: Secret = _setting(Secret(""), "Slack bot token, xoxb-... (memorybot slack).")
    slack_app_token: Secret = _setting(Secret(""), "Slack app-level token, xapp-...; set it for Socket Mode.")
    slack_signing_secret: Secret = _setting(Secret(""), "Slack signing secret, for HTTP mode.")
    slack_http_host: str = _setting("127.0.0.1", "Address the HTTP mode listens on.")
    slack_http_port: int = _setting(3000, "Port the HTTP mode listens on.")

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def embedder(self) -> str:
        """The embedder runtime in use: EMBEDDER_BACKEND, or the one that matches MODEL_BACKEND."""
        if self.embedder_backend:
            return self.embedder_backend
        return "llama_cpp" if self.model_backend == "llama_cpp" else "sentence_transformers"

    @property
    def memory_dir(self) -> Path:
        return self.data_dir / "memory"

    @property
    def queue_path(self) -> Path:
        return self.data_dir / "bot.sqlite3"


def settings_help() -> list[tuple[str, str, str]]:
    """(ENV_NAME, default as text, meaning) for every setting, in declaration order."""
    rows = []
    for f in fields(Settings):
        default = f.default
        if isinstance(default, frozenset):
            text = ",".join(sorted(default))
        elif isinstance(default, bool):
            text = "true" if default else "false"
        elif isinstance(default, Secret):
            text = default.reveal()
        else:
            text = str(default)
        rows.append((f.name.upper(), text, f.metadata["help"]))
    return rows


def _parse(name: str, kind: Any, raw: str) -> Any:
    raw = raw.strip()
    try:
        if kind is bool:
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError("expected true or false")
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is Path:
            return Path(raw).expanduser()
        if kind is Secret:
            return Secret(raw)
        if kind == frozenset[str]:
            return frozenset(part.strip() for part in raw.split(",") if part.strip())
        return raw
    except ValueError as exc:
        raise SettingsError(f"{name}: cannot read {raw!r} ({exc})") from None


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read settings: explicit overrides win, then the process environment, then `.env`, then defaults.
    A missing `.env` is fine (defaults and the environment); another named file that is missing is an error."""
    if env_file and Path(env_file).name != ".env" and not Path(env_file).exists():
        raise SettingsError(f"settings file {env_file} not found")
    file_values = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file else {}
    hints = get_type_hints(Settings)
    values: dict[str, Any] = {}
    for f in fields(Settings):
        env = f.name.upper()
        raw = os.environ.get(env, file_values.get(env))
        if raw is not None and raw.strip() != "":
            values[f.name] = _parse(env, hints[f.name], raw)
    for name, value in overrides.items():
        if name not in hints:
            raise SettingsError(f"unknown setting {name!r}")
        values[name] = _parse(name.upper(), hints[name], value) if isinstance(value, str) else value
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    positive = ["model_threads", "max_new_tokens", "context_tokens", "generation_queue_size",
                "max_input_chars", "memory_top_k"]
    for name in positive:
        if getattr(s, name) <= 0:
            raise SettingsError(f"{name.upper()} must be greater than 0")
    for name in ["history_turns", "memory_token_budget", "memory_ttl_days", "rate_limit_messages"]:
        if getattr(s, name) < 0:
            raise SettingsError(f"{name.upper()} must not be negative")
    if s.model_backend not in {"transformers", "llama_cpp", "openai"}:
        raise SettingsError(f"MODEL_BACKEND must be transformers, llama_cpp or openai, not {s.model_backend!r}")
    if s.model_backend == "openai" and not s.openai_base_url:
        raise SettingsError("OPENAI_BASE_URL is required when MODEL_BACKEND=openai")
    if s.embedder_backend not in {"", "sentence_transformers", "llama_cpp"}:
        raise SettingsError(
            f"EMBEDDER_BACKEND must be sentence_transformers, llama_cpp or empty, not {s.embedder_backend!r}"
        )
    if not s.memory_recall_channels or s.memory_recall_channels - set(CHANNELS):
        raise SettingsError(f"MEMORY_RECALL_CHANNELS must name one or more of {', '.join(CHANNELS)}")
    if s.vector_store not in {"qdrant", "pgvector"}:
        raise SettingsError(f"VECTOR_STORE must be qdrant or pgvector, not {s.vector_store!r}")
    if s.vector_store == "pgvector" and not s.pgvector_url:
        raise SettingsError("PGVECTOR_URL is required when VECTOR_STORE=pgvector")
    for name in ["temperature", "repetition_penalty", "memory_min_score", "rate_limit_window_seconds",
                 "writeback_quiet_seconds", "writeback_max_backoff_seconds"]:
        if not math.isfinite(getattr(s, name)):
            raise SettingsError(f"{name.upper()} must be a number")
    if s.temperature < 0:
        raise SettingsError("TEMPERATURE must not be negative")
    if s.repetition_penalty <= 0:
        raise SettingsError("REPETITION_PENALTY must be greater than 0 (1 means no penalty)")
    if not 0 <= s.memory_min_score <= 1:
        raise SettingsError("MEMORY_MIN_SCORE must be between 0 and 1")
    if s.rate_limit_window_seconds <= 0:
        raise SettingsError("RATE_LIMIT_WINDOW_SECONDS must be greater than 0 (RATE_LIMIT_MESSAGES=0 turns the "
                            "limit off)")
    if s.context_tokens < s.max_new_tokens + MIN_PROMPT_TOKENS:
        raise SettingsError(f"CONTEXT_TOKENS must leave room for the prompt: at least MAX_NEW_TOKENS + "
                            f"{MIN_PROMPT_TOKENS} ({s.max_new_tokens + MIN_PROMPT_TOKENS})")
    if not 0 <= s.slack_http_port <= 65535:
        raise SettingsError("SLACK_HTTP_PORT must be a port number (0-65535)")
    if s.vector_store == "pgvector" and not re.fullmatch(r"postgres(ql)?://\S+", s.pgvector_url.reveal()):
        # psycopg would echo the malformed value, password included, into its logs
        raise SettingsError("PGVECTOR_URL must be a URL starting with postgresql://, without spaces (escape them "
                            "as %20; its value is not shown)")
    if s.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise SettingsError(f"LOG_LEVEL must be a logging level, not {s.log_level!r}")
