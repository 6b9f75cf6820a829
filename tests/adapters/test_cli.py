"""`memorybot`'s command line: one subcommand per registered platform, clear errors and exit codes."""

from __future__ import annotations

import pytest

from adapters.cli import main
from adapters.registry import PLATFORMS


def test_every_registered_platform_is_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in PLATFORMS)


@pytest.mark.parametrize(("platform", "variable"), [("discord", "DISCORD_TOKEN"), ("slack", "SLACK_BOT_TOKEN")])
def test_a_missing_token_is_named_before_anything_loads(
    platform: str, variable: str, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    assert main(["--env-file", "/dev/null", platform]) == 1
    assert f"memorybot: {variable}" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # failed before the model or the store were touched


def test_a_bad_core_setting_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MAX_NEW_TOKENS", "none")
    assert main(["--env-file", "/dev/null", "chat"]) == 2
    assert "bad setting: MAX_NEW_TOKENS" in capsys.readouterr().err
