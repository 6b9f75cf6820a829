from pathlib import Path

import pytest

from adapters.discord.settings import DiscordSettings
from adapters.slack.settings import SlackSettings
from bot.settings import Secret, Settings, SettingsError, load_group, load_settings, settings_help

REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_types(monkeypatch):
    monkeypatch.delenv("DATA_DIR", raising=False)
    s = load_settings(env_file=None)
    assert s.data_dir == Path("data")
    assert s.model.name == "qwen2.5-coder-0.5b"
    assert s.access.rate_limit_messages == 10
    assert s.access.allowed_users == frozenset()


def test_environment_beats_env_file(tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_text("MAX_NEW_TOKENS=99\nALLOWED_USERS=a, b\nALLOW_DMS=false\n")
    monkeypatch.setenv("MAX_NEW_TOKENS", "42")
    s = load_settings(env)
    assert s.model.max_new_tokens == 42
    assert s.access.allowed_users == frozenset({"a", "b"})
    assert s.access.allow_dms is False


@pytest.mark.parametrize(
    ("env", "value", "names"),
    [("MODEL_THREADS", "two", "MODEL_THREADS"), ("ALLOW_DMS", "maybe", "ALLOW_DMS"),
     ("MAX_NEW_TOKENS", "0", "MAX_NEW_TOKENS"), ("VECTOR_STORE", "chroma", "VECTOR_STORE"),
     ("EMBEDDER_BACKEND", "onnx", "EMBEDDER_BACKEND"), ("MEMORY_MIN_SCORE", "1.5", "MEMORY_MIN_SCORE"),
     ("TEMPERATURE", "nan", "TEMPERATURE"), ("REPETITION_PENALTY", "0", "REPETITION_PENALTY"),
     ("RATE_LIMIT_WINDOW_SECONDS", "0", "RATE_LIMIT_WINDOW_SECONDS"), ("CONTEXT_TOKENS", "300", "CONTEXT_TOKENS"),
     ("LOG_LEVEL", "LOUD", "LOG_LEVEL"), ("MEMORY_RECALL_CHANNELS", "dense,magic", "MEMORY_RECALL_CHANNELS")],
)
def test_bad_values_name_the_variable(monkeypatch, env, value, names):
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match=names):
        load_settings(env_file=None)


def test_a_malformed_database_url_is_refused_without_showing_it(monkeypatch):
    monkeypatch.setenv("VECTOR_STORE", "pgvector")
    monkeypatch.setenv("PGVECTOR_URL", "bob:s3cr3t@db.example/mem")
    with pytest.raises(SettingsError, match="PGVECTOR_URL") as raised:
        load_settings(env_file=None)
    assert "s3cr3t" not in str(raised.value)


def test_a_named_settings_file_must_exist(tmp_path):
    with pytest.raises(SettingsError, match="typo.env"):
        load_settings(tmp_path / "typo.env")
    assert load_settings(tmp_path / ".env").model.name  # a missing .env is fine: defaults and the environment


def test_embedder_follows_the_model_backend_unless_set():
    assert load_settings(env_file=None).embedder == "openvino"
    assert load_settings(env_file=None, model_backend="transformers").embedder == "sentence_transformers"
    assert load_settings(env_file=None, model_backend="llama_cpp").embedder == "llama_cpp"
    assert load_settings(env_file=None, model_backend="openai",
                         openai_base_url="http://127.0.0.1:9/v1").embedder == "openvino"
    assert load_settings(env_file=None, model_backend="llama_cpp",
                         embedder_backend="sentence_transformers").embedder == "sentence_transformers"


def test_secrets_never_show():
    s = load_settings(env_file=None, openai_api_key=Secret("abc.def.ghi"))
    assert "abc.def.ghi" not in repr(s)
    assert "abc.def.ghi" not in f"{s.model.openai_api_key}"
    assert s.model.openai_api_key.reveal() == "abc.def.ghi"


def test_an_unknown_override_is_refused():
    with pytest.raises(SettingsError, match="no_such_thing"):
        load_settings(env_file=None, no_such_thing=1)


def test_each_adapter_reads_its_own_group(monkeypatch):
    monkeypatch.setenv("SLACK_HTTP_PORT", "70000")
    with pytest.raises(SettingsError, match="SLACK_HTTP_PORT"):
        load_group(SlackSettings, env_file=None, slack_bot_token="xoxb-1", slack_signing_secret="s")
    monkeypatch.setenv("DISCORD_RESPOND_CHANNELS", "c1, c2")
    discord = load_group(DiscordSettings, env_file=None, discord_token="abc")
    assert discord.respond_channels == frozenset({"c1", "c2"})
    load_settings(env_file=None)  # the core does not read the platforms' variables


def test_env_example_lists_every_setting_with_its_default_and_meaning():
    example = (REPO / ".env.example").read_text()
    assigned = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    rows = settings_help(Settings, DiscordSettings, SlackSettings)
    assert len({env for env, _, _ in rows}) == len(rows) == len(assigned)
    for env, default, meaning in rows:
        assert assigned.get(env) == default, env
        assert f"# {meaning}\n{env}=" in example, env
