"""Slack's settings: the tokens, and where HTTP mode listens. Socket Mode when SLACK_APP_TOKEN is set."""

from __future__ import annotations

from dataclasses import dataclass

from bot.settings import Secret, SettingsError, between, setting


@dataclass(frozen=True)
class SlackSettings:
    bot_token: Secret = setting("SLACK_BOT_TOKEN", Secret(""), "Slack bot token, xoxb-... (memorybot slack).")
    app_token: Secret = setting("SLACK_APP_TOKEN", Secret(""),
                                "Slack app-level token, xapp-...; set it for Socket Mode.")
    signing_secret: Secret = setting("SLACK_SIGNING_SECRET", Secret(""), "Slack signing secret, for HTTP mode.")
    http_host: str = setting("SLACK_HTTP_HOST", "127.0.0.1", "Address the HTTP mode listens on.")
    http_port: int = setting("SLACK_HTTP_PORT", 3000, "Port the HTTP mode listens on.", between(0, 65535))

    @property
    def socket_mode(self) -> bool:
        return bool(self.app_token)

    def validate(self) -> None:
        """Fail at startup, naming the variable, when a required token is missing or of the wrong kind."""
        if not self.bot_token:
            raise SettingsError("SLACK_BOT_TOKEN is required for memorybot slack (the xoxb-... bot token)")
        if not self.bot_token.reveal().startswith("xoxb-"):
            raise SettingsError("SLACK_BOT_TOKEN must be a bot token starting with xoxb-")
        if self.app_token:
            if not self.app_token.reveal().startswith("xapp-"):
                raise SettingsError("SLACK_APP_TOKEN must be an app-level token starting with xapp-")
        elif not self.signing_secret:
            raise SettingsError(
                "SLACK_SIGNING_SECRET is required in HTTP mode (or set SLACK_APP_TOKEN for Socket Mode)"
            )
