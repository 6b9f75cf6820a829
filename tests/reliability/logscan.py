"""What must never appear in a log line: secrets (tokens, the signing secret, the database password) and what users
said. Sections give their users' messages a canary, a made-up word found nowhere else (`Canaries.say`), so a log
line quoting a message, whole or in part, cut or lower-cased, is found by its canary; secrets are looked for
whole. `LogCapture` collects the records of the running process at DEBUG (libraries included); subprocesses are
run with LOG_LEVEL=DEBUG and their stderr read back (`scan_file`)."""

from __future__ import annotations

import itertools
import logging
import random
import string
from collections.abc import Iterable
from pathlib import Path

from tests.reliability.tally import Table

# secrets the sections configure their bots with; they must never be logged
SLACK_BOT_TOKEN = "xoxb-0000-reliab1l1ty-bot-token"
SLACK_SIGNING_SECRET = "s1gning-secret-reliability-7f3a"
SLACK_APP_TOKEN = "xapp-1-reliab1l1ty-app-token"
DISCORD_TOKEN = "MTAxRel1ab1l1tyD1scordT0ken.Gx7Yq2.reliability-discord-token-xyz"
DATABASE_PASSWORD = "pw-reliab1l1ty-9c41e"
OPENAI_API_KEY = "sk-reliab1l1ty-openai-key"
SECRETS = (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_APP_TOKEN, DISCORD_TOKEN, DATABASE_PASSWORD, OPENAI_API_KEY)


def with_password(url: str) -> str:
    """A test PostgreSQL URL (trust authentication: any password is accepted) carrying DATABASE_PASSWORD."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{DATABASE_PASSWORD}@{host}"


class Canaries:
    """Made-up words, one per message a section sends, that nothing but that message contains."""

    def __init__(self, seed: int = 0) -> None:
        self._random = random.Random(seed)
        self._counter = itertools.count()
        self.words: list[str] = []

    def word(self) -> str:
        letters = "".join(self._random.choices(string.ascii_lowercase, k=6))
        word = f"qz{letters}{next(self._counter)}"
        self.words.append(word)
        return word

    def say(self, text: str) -> str:
        """`text` with a canary added (as a nickname, so extraction may keep it in a fact)."""
        return f"{text} (call me {self.word()})"


def hits(lines: Iterable[str], forbidden: Iterable[str]) -> list[str]:
    """The lines quoting any of `forbidden` (case-insensitive), each as `what: line`."""
    needles = [(f, f.lower()) for f in forbidden if f]
    found = []
    for line in lines:
        low = line.lower()
        found += [f"{needle!r} in {line[:300]!r}" for needle, low_needle in needles if low_needle in low]
    return found


def scan(table: Table, case: str, lines: Iterable[str], canaries: Canaries | None = None,
         extra: Iterable[str] = ()) -> None:
    """Count each line scanned as one case of `case` in `table`; a line quoting a secret or a canary is a
    violation."""
    lines = list(lines)
    forbidden = [*SECRETS, *(canaries.words if canaries else ()), *extra]
    found = hits(lines, forbidden)
    table.add(case, len(lines), found)


def scan_file(table: Table, case: str, path: Path, canaries: Canaries | None = None,
              extra: Iterable[str] = ()) -> None:
    scan(table, case, path.read_text(errors="replace").splitlines() if path.exists() else [], canaries, extra)


class LogCapture(logging.Handler):
    """Every log record of this process at DEBUG, formatted as the bot's own log format would write it (the
    arguments filled in), while in use: `with LogCapture() as logs: ...; logs.lines`. Loggers are configured as
    `adapters.cli.setup_logging` configures them at LOG_LEVEL=DEBUG."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._saved: list[tuple[logging.Logger, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.extend(self.format(record).splitlines() or [""])
        except Exception:  # a record that cannot be formatted is itself worth seeing
            self.lines.append(f"UNFORMATTABLE {record.name}: {record.msg!r}")

    def __enter__(self) -> LogCapture:
        from adapters.cli import CHATTY_LOGGERS, NOISY_LOGGERS

        root = logging.getLogger()
        self._saved = [(root, root.level)]
        root.setLevel(logging.DEBUG)
        root.addHandler(self)
        for name in (*NOISY_LOGGERS, *CHATTY_LOGGERS):
            logger = logging.getLogger(name)
            self._saved.append((logger, logger.level))
            logger.setLevel(logging.WARNING if name in NOISY_LOGGERS else logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)
        for logger, level in self._saved:
            logger.setLevel(level)
