"""Shared fixtures: settings in a temporary DATA_DIR, and one cache of the converted bundled model.

Preparing the bundled GGUF takes about a minute, so the prepared model is kept in `.cache/test-data`
(override with MEMORYBOT_TEST_MODEL_CACHE) and linked into each test's DATA_DIR.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.settings import Settings, load_settings
from tests.servers.postgres import PostgresServer, postgres_server

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MEM0_TELEMETRY", "False")


@pytest.fixture(scope="session")
def model_data_dir() -> Path:
    """A folder holding `models/` with the bundled model prepared (joined, and made into OpenVINO IR for the
    default backend) once; other backends' forms are made there when a test first asks for them."""
    from bot.llm import resolve_openvino

    root = Path(os.environ.get("MEMORYBOT_TEST_MODEL_CACHE", REPO / ".cache" / "test-data"))
    resolve_openvino(load_settings(env_file=None, data_dir=root, model_backend="openvino"))
    return root


@pytest.fixture(scope="session")
def postgres() -> Any:
    """One real PostgreSQL + pgvector server on 127.0.0.1 for the session; `new_database()` per test."""
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["embedded-qdrant", "pgvector"])
def vector_store(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings overrides for each vector store the bot supports; a test using it runs once per store."""
    if request.param == "pgvector":
        server: PostgresServer = request.getfixturevalue("postgres")
        return {"vector_store": "pgvector", "pgvector_url": server.new_database()}
    return {}


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    """The core's settings for a test: DATA_DIR given, nothing read from `.env`; keyword arguments are settings
    by their variable's name in lower case (`rate_limit_messages=1`). The one settings factory of the tests."""
    overrides.setdefault("writeback_quiet_seconds", 0.0)  # tests wait for write-back with drain()
    # The default (OpenVINO) embedder exports itself once per DATA_DIR (~20 s): tests on a fresh DATA_DIR use
    # sentence-transformers (the same vectors, tested); `real_settings` and the embedder's own tests run it.
    overrides.setdefault("embedder_backend", "sentence_transformers")
    return load_settings(env_file=None, data_dir=data_dir, **overrides)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """`settings_for` with DATA_DIR in a temporary folder (unless given)."""

    def make(**overrides: Any) -> Settings:
        return settings_for(overrides.pop("data_dir", tmp_path / "data"), **overrides)

    return make


@pytest.fixture
def real_settings(make_settings: Callable[..., Settings], model_data_dir: Path, tmp_path: Path) -> Settings:
    """Settings for the real bundled model and the default embedder: a fresh DATA_DIR whose models/ links to the
    shared cache."""
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "models").symlink_to(model_data_dir / "models", target_is_directory=True)
    return make_settings(data_dir=data, embedder_backend="")  # the default embedder, exported once in models/
