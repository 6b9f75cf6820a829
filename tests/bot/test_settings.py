from pathlib import Path

import pytest

from bot.settings import Secret, Settings, SettingsError, load_settings, settings_help

REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_types(monkeypatch):
    monkeypatch.delenv("DATA_DIR", raising=False)
    s = load_settings(env_file=None)
    assert s.data_dir == Path("data")
    assert s.model == "qwen2.5-coder-0.5b"
    assert s.rate_limit_messages == 10
    assert s.allowed_users == frozenset()


def test_environment_beats_env_file(tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_text("MAX_NEW_TOKENS=99\nALLOWED_USERS=a, b\nALLOW_DMS=false\n")
    monkeypatch.setenv("MAX_NEW_TOKENS", "42")
    s = load_settings(env)
    assert s.max_new_tokens == 42
    assert s.allowed_users == frozenset({"a", "b"})
    assert s.allow_dms is False


@pytest.mark.parametrize(
    ("env", "value", "names"),
    [("MODEL_THREADS", "two", "MODEL_THREADS"), ("ALLOW_DMS", "maybe", "ALLOW_DMS"),
     ("MAX_NEW_TOKENS", "0", "MAX_NEW_TOKENS"), ("VECTOR_STORE", "chroma", "VECTOR_STORE"),
     ("EMBEDDER_BACKEND", "onnx", "EMBEDDER_BACKEND")],
)
def test_bad_values_name_the_variable(monkeypatch, env, value, names):
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match=names):
        load_settings(env_file=None)


def test_embedder_follows_the_model_backend_unless_set():
    assert load_settings(env_file=None).embedder == "sentence_transformers"
    assert load_settings(env_file=None, model_backend="llama_cpp").embedder == "llama_cpp"
    assert load_settings(env_file=None, model_backend="llama_cpp",
                         embedder_backend="sentence_transformers").embedder == "sentence_transformers"


def test_secrets_never_show():
    s = load_settings(env_file=None, discord_token=Secret("abc.def.ghi"))
    assert "abc.def.ghi" not in repr(s)
    assert "abc.def.ghi" not in f"{s.discord_token}"
    assert s.discord_token.reveal() == "abc.def.ghi"


def test_env_example_lists_every_setting_with_its_default():
    example = (REPO / ".env.example").read_text()
    assigned = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    rows = settings_help()
    assert len(rows) == len(Settings.__dataclass_fields__)
    for env, default, _help in rows:
        assert assigned.get(env) == default, env
