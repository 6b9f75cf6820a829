"""All configuration, typed and grouped by part, read from the environment and `.env`.

`Settings` holds the core's groups (model, memory, access); each platform adapter declares its own group beside
its code (`adapters/discord/settings.py`, `adapters/slack/settings.py`) and loads it with `load_group`. Every
field names its environment variable, its meaning and, where a value can be wrong, the check that refuses it;
a group's `validate()` checks what spans several fields. A bad value is a `SettingsError` naming the variable.
`.env.example` lists every variable with its default and meaning (a test keeps the two in step).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from dotenv import dotenv_values

from memory.recall import CHANNELS

MIN_PROMPT_TOKENS = 512  # the smallest prompt (instructions, a message, fact extraction) worth running

Check = Callable[[Any], str | None]  # a value's problem, said as "must ...", or None
G = TypeVar("G")


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


def setting(env: str, default: Any, help: str, check: Check | None = None) -> Any:
    """A field read from the environment variable `env`; `check` refuses a bad value."""
    return field(default=default, metadata={"env": env, "help": help, "check": check})


def group(cls: type[G]) -> Any:
    """A field holding a group of settings."""
    return field(default_factory=cls)


# --- checks declared beside the fields


def positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def not_negative(value: float) -> str | None:
    return None if value >= 0 else "must not be negative"


def between(low: float, high: float) -> Check:
    return lambda value: None if low <= value <= high else f"must be between {low:g} and {high:g}"


def one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else f"must be {' or '.join(c or 'empty' for c in choices)}"


def _log_level(value: str) -> str | None:
    return None if value.upper() in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"} else "must be a logging level"


def _channels(value: frozenset[str]) -> str | None:
    return None if value and value <= set(CHANNELS) else f"must name one or more of {', '.join(CHANNELS)}"


# --- the core's groups


@dataclass(frozen=True)
class ModelSettings:
    name: str = setting(
        "MODEL", "qwen2.5-coder-0.5b",
        "qwen2.5-coder-0.5b, qwen2.5-coder-1.5b (quality extra), a transformers folder or cached hub id, a .gguf path, "
        "an OpenVINO IR folder (openvino backend), or the served model's name (openai backend).")
    backend: str = setting(
        "MODEL_BACKEND", "openvino",
        "Generation backend: openvino (GGUF models or OpenVINO IR folders), transformers (any transformers "
        "model), llama_cpp (llama extra, GGUF models) or openai (a model server).",
        one_of("openvino", "transformers", "llama_cpp", "openai"))
    openvino_weights: str = setting(
        "OPENVINO_WEIGHTS", "int8",
        "For MODEL_BACKEND=openvino: weight format of the model prepared from a GGUF, int8 (answers as the original "
        "does) or int4 (faster and smaller, but uses memories less well).", one_of("int4", "int8"))
    openvino_activation_group: int = setting(
        "OPENVINO_ACTIVATION_GROUP", 128,
        "For MODEL_BACKEND=openvino: group size of the int8 activations the CPU multiplies int4/int8 weights with "
        "(OpenVINO's DYNAMIC_QUANTIZATION_GROUP_SIZE); 0 keeps activations in bf16/f32.", not_negative)
    openai_base_url: str = setting("OPENAI_BASE_URL", "",
                                   "For MODEL_BACKEND=openai: the server's URL, e.g. http://127.0.0.1:8000/v1.")
    openai_api_key: Secret = setting("OPENAI_API_KEY", Secret(""),
                                     "For MODEL_BACKEND=openai: the server's API key, if it needs one.")
    threads: int = setting("MODEL_THREADS", 2, "CPU threads for the model and the embedder.", positive)
    max_new_tokens: int = setting("MAX_NEW_TOKENS", 256, "Longest reply the model may write, in tokens.", positive)
    temperature: float = setting("TEMPERATURE", 0.0, "Sampling temperature; 0 means greedy decoding.", not_negative)
    repetition_penalty: float = setting(
        "REPETITION_PENALTY", 1.15, "Penalty against repeating tokens (stops greedy loops).",
        lambda value: None if value > 0 else "must be greater than 0 (1 means no penalty)")
    context_tokens: int = setting("CONTEXT_TOKENS", 2048,
                                  "Prompt budget in tokens (system, memories, history, message).", positive)
    generation_queue_size: int = setting("GENERATION_QUEUE_SIZE", 8,
                                         "Replies that may wait for the model before users are told to retry.",
                                         positive)
    max_input_chars: int = setting("MAX_INPUT_CHARS", 4000,
                                   "Longer messages are cut to this many characters for the model.", positive)
    history_turns: int = setting("HISTORY_TURNS", 6, "Most recent exchanges of the same conversation kept in the "
                                 "prompt (backends reusing prompt starts drop the oldest half at once).", not_negative)
    bot_name: str = setting("BOT_NAME", "memorybot", "The name the bot uses for itself in the system prompt.")

    def validate(self) -> None:
        if self.backend == "openai" and not self.openai_base_url:
            raise SettingsError("OPENAI_BASE_URL is required when MODEL_BACKEND=openai")
        if self.context_tokens < self.max_new_tokens + MIN_PROMPT_TOKENS:
            raise SettingsError(f"CONTEXT_TOKENS must leave room for the prompt: at least MAX_NEW_TOKENS + "
                                f"{MIN_PROMPT_TOKENS} ({self.max_new_tokens + MIN_PROMPT_TOKENS})")


@dataclass(frozen=True)
class MemorySettings:
    top_k: int = setting("MEMORY_TOP_K", 8, "How many memories are recalled for a message at most.", positive)
    token_budget: int = setting("MEMORY_TOKEN_BUDGET", 400, "Token budget for recalled memories in the prompt.",
                                not_negative)
    min_score: float = setting("MEMORY_MIN_SCORE", 0.1, "Recalled memories need at least this similarity (0..1).",
                               between(0, 1))
    keep_messages: bool = setting(
        "MEMORY_KEEP_MESSAGES", True,
        "Also keep the user's own messages (split into passages) as memories beside the facts learned from "
        "them; false keeps facts only.")
    recall_channels: frozenset[str] = setting(
        "MEMORY_RECALL_CHANNELS", frozenset({"dense", "keyword", "time"}),
        "Recall channels fused for each message: dense (meaning), keyword (shared words; PostgreSQL and embedded "
        "store), time (a time the message names), entity (names and numbers; off by default: it did not help).",
        _channels)
    ttl_days: int = setting("MEMORY_TTL_DAYS", 0, "Days a memory is kept after it was said, fixed when it is learned; "
                                                  "expired ones are never recalled and are purged daily. 0: forever.",
                            not_negative)
    embedder_model: str = setting(
        "EMBEDDER_MODEL", "",
        "Sentence-embedding model (384-d): a sentence-transformers folder (BERT with model.safetensors for the "
        "openvino and llama_cpp embedders, or a .gguf for llama_cpp). Empty uses the bundled all-MiniLM-L6-v2.")
    embedder_backend: str = setting(
        "EMBEDDER_BACKEND", "",
        "Embedder runtime: openvino (exported once; no torch in the process after that), sentence_transformers or "
        "llama_cpp (llama extra). Empty follows MODEL_BACKEND: llama_cpp with llama_cpp, sentence_transformers "
        "with transformers (torch is loaded anyway), otherwise openvino.",
        one_of("openvino", "sentence_transformers", "llama_cpp", ""))
    vector_store: str = setting("VECTOR_STORE", "qdrant", "Vector store provider: qdrant or pgvector.",
                                one_of("qdrant", "pgvector"))
    qdrant_url: str = setting("QDRANT_URL", "", "Qdrant server URL; empty uses embedded Qdrant under DATA_DIR.")
    qdrant_api_key: Secret = setting("QDRANT_API_KEY", Secret(""), "API key for the Qdrant server, if it needs one.")
    pgvector_url: Secret = setting("PGVECTOR_URL", Secret(""), "postgresql:// URL for the pgvector provider.")
    writeback_max_backoff_seconds: float = setting("WRITEBACK_MAX_BACKOFF_SECONDS", 300.0,
                                                   "Longest wait between retries of a failing write-back.",
                                                   not_negative)
    writeback_lease_seconds: float = setting(
        "WRITEBACK_LEASE_SECONDS", 120.0,
        "How long a worker's claim on a queued exchange lasts unless renewed (it renews it while it works): a "
        "process that dies mid-exchange has it taken over by another after this long (DATABASE_URL).", positive)
    database_url: Secret = setting(
        "DATABASE_URL", Secret(""),
        "postgresql:// URL of a database for the bot's own state (write-back queue, paused users, learned message "
        "ids, Slack event ids, and the recent conversation turns kept for prompts), shared by every bot process and "
        "worker pointed at it; may be PGVECTOR_URL's. Empty keeps that state in SQLite under DATA_DIR (one process).")
    writeback_worker: bool = setting(
        "WRITEBACK_WORKER", True,
        "Learn queued exchanges in this process. false only queues them, for `memorybot worker` processes on the "
        "same DATABASE_URL (replies and learning on different machines).")
    writeback_quiet_seconds: float = setting(
        "WRITEBACK_QUIET_SECONDS", 3.0,
        "Learning starts once no reply has run for this long (at most a minute later), so it never slows a chat.",
        not_negative)

    @property
    def embedded(self) -> bool:
        """Whether the memories live under DATA_DIR (embedded Qdrant), where only one process can reach them."""
        return self.vector_store == "qdrant" and not self.qdrant_url

    def validate(self) -> None:
        if not self.writeback_worker and not self.database_url:
            raise SettingsError("WRITEBACK_WORKER=false needs DATABASE_URL: the exchanges it queues are learned by "
                                "`memorybot worker` processes sharing that database")
        if self.database_url:
            _check_url("DATABASE_URL", self.database_url)
            if self.embedded:
                raise SettingsError("DATABASE_URL shares the bot's state between processes, so their memories must "
                                    "be shared too: set VECTOR_STORE=pgvector (PGVECTOR_URL) or QDRANT_URL")
        if self.vector_store != "pgvector":
            return
        if not self.pgvector_url:
            raise SettingsError("PGVECTOR_URL is required when VECTOR_STORE=pgvector")
        _check_url("PGVECTOR_URL", self.pgvector_url)


def _check_url(name: str, url: Secret) -> None:
    if not re.fullmatch(r"postgres(ql)?://\S+", url.reveal()):
        # psycopg would echo the malformed value, password included, into its logs
        raise SettingsError(f"{name} must be a URL starting with postgresql://, without spaces (escape them as "
                            "%20; its value is not shown)")


@dataclass(frozen=True)
class AccessSettings:
    """Who the bot answers, on every platform."""

    allowed_users: frozenset[str] = setting("ALLOWED_USERS", frozenset(),
                                            "Comma-separated user ids; empty allows everyone.")
    blocked_users: frozenset[str] = setting("BLOCKED_USERS", frozenset(), "Comma-separated user ids the bot ignores.")
    allowed_channels: frozenset[str] = setting("ALLOWED_CHANNELS", frozenset(),
                                               "Comma-separated channel ids; empty allows all.")
    blocked_channels: frozenset[str] = setting("BLOCKED_CHANNELS", frozenset(),
                                               "Comma-separated channel ids the bot ignores.")
    allowed_roles: frozenset[str] = setting("ALLOWED_ROLES", frozenset(),
                                            "Comma-separated role ids; empty allows all (Discord).")
    blocked_roles: frozenset[str] = setting("BLOCKED_ROLES", frozenset(),
                                            "Comma-separated role ids the bot ignores (Discord).")
    allow_dms: bool = setting("ALLOW_DMS", True, "Answer direct messages.")
    admin_users: frozenset[str] = setting("ADMIN_USERS", frozenset(),
                                          "Comma-separated user ids always let in, even when ALLOWED_USERS is set.")
    rate_limit_messages: int = setting("RATE_LIMIT_MESSAGES", 10,
                                       "Messages per user per window; 0 turns the limit off.", not_negative)
    rate_limit_window_seconds: float = setting(
        "RATE_LIMIT_WINDOW_SECONDS", 60.0, "Length of the rate-limit window in seconds.",
        lambda value: None if value > 0 else "must be greater than 0 (RATE_LIMIT_MESSAGES=0 turns the limit off)")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = setting("DATA_DIR", Path("data"), "Folder for all state: model cache, vector store, queues.")
    log_level: str = setting("LOG_LEVEL", "INFO", "Python logging level (DEBUG, INFO, WARNING, ERROR).", _log_level)
    model: ModelSettings = group(ModelSettings)
    memory: MemorySettings = group(MemorySettings)
    access: AccessSettings = group(AccessSettings)

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def memory_dir(self) -> Path:
        return self.data_dir / "memory"

    @property
    def database_path(self) -> Path:
        """The bot's own state: the write-back queue, paused users, learned-from message ids."""
        return self.data_dir / "bot.sqlite3"

    @property
    def embedder(self) -> str:
        """The embedder runtime in use: EMBEDDER_BACKEND, or the one that matches MODEL_BACKEND."""
        if self.memory.embedder_backend:
            return self.memory.embedder_backend
        if self.model.backend == "llama_cpp":
            return "llama_cpp"
        if self.model.backend == "transformers":
            return "sentence_transformers"
        return "openvino"  # openvino, and openai: a process whose model runs elsewhere needs no torch


# --- loading


def _settings_fields(cls: type) -> Iterator[tuple[str, Any]]:
    """(env name, dataclass field) of every setting in `cls` and its groups, in declaration order."""
    for f in fields(cls):
        if "env" in f.metadata:
            yield f.metadata["env"], f
        else:
            yield from _settings_fields(f.default_factory)  # type: ignore[misc, arg-type]


def settings_help(*groups: type) -> list[tuple[str, str, str]]:
    """(ENV_NAME, default as text, meaning) for every setting of these groups (default: the core's)."""
    rows = []
    for cls in groups or (Settings,):
        for env, f in _settings_fields(cls):
            rows.append((env, _as_text(f.default), f.metadata["help"]))
    return rows


def _as_text(value: Any) -> str:
    if isinstance(value, frozenset):
        return ",".join(sorted(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Secret):
        return value.reveal()
    return str(value)


def _parse(env: str, kind: Any, raw: str) -> Any:
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
        raise SettingsError(f"{env}: cannot read {raw!r} ({exc})") from None


def _build(cls: type[G], raw: Mapping[str, str], overrides: dict[str, Any]) -> G:
    """`cls` from the raw environment values and typed overrides (both keyed by env name), checked."""
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if "env" not in f.metadata:
            values[f.name] = _build(f.default_factory, raw, overrides)  # type: ignore[misc, arg-type]
            continue
        env = f.metadata["env"]
        if env in overrides:
            value = overrides[env]
            values[f.name] = _parse(env, hints[f.name], value) if isinstance(value, str) else value
        elif (text := raw.get(env)) is not None and text.strip() != "":
            values[f.name] = _parse(env, hints[f.name], text)
        else:
            continue
        value = values[f.name]
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsError(f"{env} must be a number, not {value!r}")
        if (check := f.metadata["check"]) and (problem := check(value)):
            shown = "" if hints[f.name] is Secret else f", not {_as_text(value) or 'empty'}"
            raise SettingsError(f"{env} {problem}{shown}")
    built = cls(**values)
    if validate := getattr(built, "validate", None):
        validate()
    return built


def load_group(cls: type[G], env_file: str | Path | None = ".env", **overrides: Any) -> G:
    """Read one group of settings: explicit overrides win (keyword = the variable's name in lower case, e.g.
    `model_threads=4`), then the process environment, then `.env`, then the defaults. A missing `.env` is fine;
    another named file that is missing is an error."""
    if env_file and Path(env_file).name != ".env" and not Path(env_file).exists():
        raise SettingsError(f"settings file {env_file} not found")
    file_values = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file else {}
    known = {env for env, _ in _settings_fields(cls)}
    typed = {name.upper(): value for name, value in overrides.items()}
    if unknown := set(typed) - known:
        raise SettingsError(f"unknown setting {', '.join(sorted(unknown)).lower()}")
    raw = {env: os.environ.get(env, file_values.get(env, "")) for env in known}
    return _build(cls, raw, typed)


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """The core's settings (see `load_group`)."""
    return load_group(Settings, env_file, **overrides)


