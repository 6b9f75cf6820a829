"""The `memorybot` command: one `main()` that reads settings and serves the chosen platform (`adapters/registry.py`)
or runs an admin task."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from adapters.platform import run
from adapters.registry import PLATFORMS, platform_class
from bot.app import open_memories
from bot.llm.base import ModelError
from bot.memories import Memories
from bot.message import UserRef
from bot.settings import Settings, SettingsError, load_settings
from bot.sql import SqlError
from bot.transfer import TransferError, export_to, import_from
from memory.store import StoreError

_log = logging.getLogger("memorybot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memorybot", description="A chat bot with long-term memory.")
    parser.add_argument("--env-file", default=".env", help="settings file (default: .env)")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in PLATFORMS:
        platform = platform_class(name)
        platform.add_arguments(commands.add_parser(name, help=platform.help))
    listing = commands.add_parser("memories", help="print a user's current memories as JSON")
    listing.add_argument("--platform", required=True)
    listing.add_argument("--workspace", default=None, help="default: local for console, else required")
    listing.add_argument("--user", required=True)
    admin = commands.add_parser("admin", help="administration tasks").add_subparsers(dest="task", required=True)
    forget = admin.add_parser("forget-user", help="delete everything remembered about one user")
    forget.add_argument("--platform", required=True)
    forget.add_argument("--workspace", default=None,
                        help="default: every workspace of that user (on Discord every server and the DMs)")
    forget.add_argument("--user", required=True)
    export = admin.add_parser("export", help="write every memory, its history and the bot's state to a file "
                                             "(JSON Lines, for `admin import`)")
    export.add_argument("--out", required=True, type=Path, help="the file to write (readable by its owner only)")
    load = admin.add_parser("import", help="add an `admin export` file to the store and database of these settings")
    load.add_argument("file", type=Path)
    load.add_argument("--merge", action="store_true",
                      help="add to a store or database that holds something already (what it holds is left alone)")
    return parser


NOISY_LOGGERS = ("httpx", "httpx2", "urllib3", "sentence_transformers", "transformers", "mem0", "qdrant_client",
                 "psycopg")
# At DEBUG these log request and event bodies, or SQL statements with their values (aiosqlite: queued exchanges,
# conversation turns), i.e. what users said: never below INFO.
CHATTY_LOGGERS = ("discord", "slack_sdk", "slack_bolt", "openai", "aiosqlite")


def setup_logging(settings: Settings, *, quiet_console: bool) -> None:
    """Log to stderr; in the terminal chat only errors go there (warnings would interrupt the conversation)
    and everything goes to DATA_DIR/memorybot.log."""
    level = getattr(logging, settings.log_level.upper())
    handlers: list[logging.Handler] = []
    stderr = logging.StreamHandler()
    stderr.setLevel(logging.ERROR if quiet_console else level)
    handlers.append(stderr)
    if quiet_console:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(settings.data_dir / "memorybot.log", encoding="utf-8"))
    logging.basicConfig(
        level=level, handlers=handlers, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    for chatty in CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(max(level, logging.INFO))


async def _memories(settings: Settings, ref: UserRef) -> None:
    async with open_memories(settings) as memories:
        print(json.dumps(await _all_records(memories, ref), indent=2, ensure_ascii=False))


async def _all_records(memories: Memories, ref: UserRef) -> list[dict]:
    page = await memories.controls.list(ref, page=1, page_size=10_000)
    return [record.to_json() for record in page.records]


async def _admin(settings: Settings, args: argparse.Namespace) -> None:
    if args.task == "forget-user":
        await _forget_user(settings, args.platform, args.workspace, args.user)
    elif args.task == "export":
        await _export(settings, args.out)
    elif args.task == "import":
        await _import(settings, args.file, args.merge)


async def _export(settings: Settings, out: Path) -> None:
    counts = await export_to(settings, out)
    print(f"Exported {', '.join(f'{n} {kind}' for kind, n in counts.items())} to {out}.")


async def _import(settings: Settings, path: Path, merge: bool) -> None:
    report = await import_from(settings, path, merge=merge)
    print(f"Imported {path}:")
    for line in report.lines():
        print(f"  {line}")


async def _forget_user(settings: Settings, platform: str, workspace: str | None, user_id: str) -> None:
    async with open_memories(settings) as memories:
        if workspace is not None:
            refs = [UserRef(platform, workspace, user_id)]
        else:
            refs = await memories.controls.identities(platform, user_id)
        if not refs:
            print(f"Nothing is remembered about {platform} user {user_id}.")
        for ref in refs:
            count = await memories.forgetting.forget_all(ref)
            _log.info("admin forget-user deleted %d memories of %s", count, ref.key)
            print(f"Deleted {count} memories and any pending write-back of {ref.key}.")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.env_file)
    except SettingsError as exc:
        print(f"memorybot: bad setting: {exc}", file=sys.stderr)
        return 2
    platform = platform_class(args.command) if args.command in PLATFORMS else None
    setup_logging(settings, quiet_console=platform.interactive if platform else True)
    try:
        if platform is not None:
            run(platform.from_env(args.env_file, args), settings)
        elif args.command == "memories":
            workspace = args.workspace or ("local" if args.platform == "console" else None)
            if workspace is None:
                print("memorybot: --workspace is required for this platform", file=sys.stderr)
                return 2
            asyncio.run(_memories(settings, UserRef(args.platform, workspace, args.user)))
        elif args.command == "admin":
            asyncio.run(_admin(settings, args))
    except (ModelError, SettingsError, StoreError, SqlError, TransferError) as exc:
        print(f"memorybot: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
