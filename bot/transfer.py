"""Moving a bot to another store and database without losing anything: `memorybot admin export` writes every
identity's memories (with their ids, vectors, provenance, expiry and mem0's history) and the bot's state to one
file; `memorybot admin import` writes them into the store and database of other settings (the embedded default
to PostgreSQL + pgvector, say) as they were.

The file is JSON Lines in UTF-8. Line 1 is the header:

    {"format": "memorybot-export", "version": 1, "schema_version": 2, "state_version": 2,
     "embedder": {"model": "all-MiniLM-L6-v2", "runtime": "openvino", "dims": 384},
     "vector_encoding": "base64-float32-le", "exported_at": "2026-11-26T10:00:00+00:00",
     "counts": {"memory": 120, "history": 130, "pending": 1, "set_aside": 0, "learned_from": 60, "paused": 1,
                "bot_thread": 4}}

then one record a line, each with its `type`, in this order:

- `memory`: `id`, `vector` (the stored vector, little-endian float32 in base64: a fact's vector is anchored to its
  message, so embedding its text again would not give it back) and `payload`, as the vector store holds it
  (user_id, data, hash, created_at, updated_at, the source_* fields, kind, attribute, superseded_by,
  expiration_date...);
- `history`: a row of mem0's version history (`memory/points.py` HISTORY_COLUMNS);
- `pending`, `set_aside`, `learned_from`, `paused`, `bot_thread`: rows of the bot's state (`bot/database.py`
  STATE_TABLES). A file from before `bot_thread` records counts none of them, and holds none.

`schema_version` is the SCHEMA_VERSION of the memorybot that wrote the file, `state_version` the one-time upgrades
its memories have had (`BotDatabase.version`). The file is written to a temporary name beside the target, mode
0600 (it holds what users said), and renamed when complete; the records go to an unnamed temporary file first,
so the header can give the counts, which let an import notice a file cut short at a line's end.

An import reads the whole file once before writing anything, so a bad file changes nothing and is refused with
its line number and what is wrong (never the users' words). It refuses vectors of another length than the
target store's, versions it does not know, and a target that already holds memories or state unless `merge`;
then, and on a second import of the same file, what is there already is left alone and counted. Queued
exchanges are learned by the next bot started on the new settings (a queued row's id and claim belong to the
database it was in, and are not moved).

Both need the bot stopped: with the state in SQLite, DATA_DIR is locked as a running bot locks it, and embedded
Qdrant refuses a second process. With DATABASE_URL nothing stops bots from running meanwhile; an export then holds
what was there when each page was read.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from bot.app import lock_data_dir, open_store
from bot.database import SCHEMA_VERSION, STATE_TABLES, BotDatabase
from bot.exchange import QueuedExchange
from bot.platform_state import PlatformState
from bot.settings import Settings, SettingsError
from memory.points import HISTORY_COLUMNS, Point
from memory.store import MemoryStore

_log = logging.getLogger(__name__)

FORMAT = "memorybot-export"
FORMAT_VERSION = 1
VECTOR_ENCODING = "base64-float32-le"
BUNDLED_EMBEDDER = "all-MiniLM-L6-v2"
RECORD_TYPES = ("memory", "history", *STATE_TABLES)  # in the order they are written
ADDED_SINCE = frozenset({"bot_thread"})  # record types files of this format version may lack
BATCH = 256  # records written to the target at a time

_VECTOR_DTYPE = np.dtype("<f4")
_HISTORY_FIELDS: dict[str, Any] = {"id": str, "memory_id": str, "event": str, "is_deleted": int,
                                   **{c: (str, None) for c in HISTORY_COLUMNS if c not in
                                      ("id", "memory_id", "event", "is_deleted")}}


class TransferError(RuntimeError):
    """A file that cannot be imported, or an export or import refused; the message says why, for the operator."""


@dataclass
class Counts:
    """What an import did with the records of one type."""

    added: int = 0
    skipped: int = 0  # there already (an id or a row the target holds)
    not_kept: int = 0  # history, where the target keeps none


@dataclass
class ImportReport:
    """What an import did, by record type, and anything the operator should know (`lines` to print)."""

    counts: dict[str, Counts] = field(default_factory=lambda: {kind: Counts() for kind in RECORD_TYPES})
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = []
        for kind, c in self.counts.items():
            line = f"{kind}: {c.added} added, {c.skipped} already there"
            if c.not_kept:
                line += f", {c.not_kept} not kept (DATABASE_URL is set: mem0's history is not written)"
            lines.append(line)
        return lines + self.notes


# --- export


async def export_to(settings: Settings, out: Path) -> dict[str, int]:
    """Write everything the bot of `settings` holds to `out`; return how many records of each type."""
    if not out.parent.is_dir():
        raise TransferError(f"cannot write {out}: {out.parent} is not a folder")
    if settings.memory.embedded and not settings.memory_dir.is_dir():
        raise TransferError(f"{settings.memory_dir} does not exist: no memories to export (is DATA_DIR right?)")
    counts = dict.fromkeys(RECORD_TYPES, 0)
    async with _opened(settings) as (store, db):
        await PlatformState(db.sql).move_in(settings.data_dir)  # threads still in an older version's file travel too
        with tempfile.TemporaryFile(dir=out.parent, prefix=f".{out.name}.") as body:  # mode 0600, no name
            async for kind, record in _everything(store, db):
                body.write(_line({"type": kind, **record}))
                counts[kind] += 1
            header = {"format": FORMAT, "version": FORMAT_VERSION, "schema_version": SCHEMA_VERSION,
                      "state_version": db.version, "embedder": _embedder(settings, store.dims),
                      "vector_encoding": VECTOR_ENCODING, "exported_at": datetime.now(UTC).isoformat(),
                      "counts": counts}
            body.seek(0)
            _write_whole(out, _line(header), body)
    _log.info("exported %s", ", ".join(f"{n} {kind}" for kind, n in counts.items()))
    return counts


async def _everything(store: MemoryStore, db: BotDatabase) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    async for page in store.all_points():
        for point in page:
            yield "memory", {"id": point.id, "vector": _encode(point.vector),
                             "payload": {key: point.payload[key] for key in sorted(point.payload)}}
    async for rows in store.history_rows():
        for row in rows:
            yield "history", row
    async for kind, record in db.state_records():
        yield kind, record


def _write_whole(out: Path, header: bytes, body: IO[bytes]) -> None:
    """`header` and then `body` to `out`, under a temporary name until complete, mode 0600."""
    handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")  # mode 0600
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(header)
            shutil.copyfileobj(body, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _encode(vector: np.ndarray) -> str:
    return base64.b64encode(vector.astype(_VECTOR_DTYPE).tobytes()).decode("ascii")


def _embedder(settings: Settings, dims: int) -> dict[str, Any]:
    model = settings.memory.embedder_model
    return {"model": Path(model).name if model else BUNDLED_EMBEDDER, "runtime": settings.embedder, "dims": dims}


# --- import


async def import_from(settings: Settings, path: Path, *, merge: bool = False) -> ImportReport:
    """Write the export at `path` into the store and database of `settings` (see the module's docstring)."""
    header = _checked_file(path)
    report = ImportReport()
    async with _opened(settings) as (store, db):
        _check_target(header, settings, store, report)
        held, has_state = await store.count_points(), await db.has_state()
        if (held or has_state) and not merge:
            what = " and ".join(part for part, there in ((f"{held} memories", held),
                                                         ("bot state (queued exchanges, pauses...)", has_state))
                                if there)
            raise TransferError(f"the target already holds {what}: import into an empty store and database, or add "
                                "--merge to add to what is there (what it holds already is left alone)")
        for kind, batch in _batches(path):
            counts = report.counts[kind]
            if kind == "memory":
                added = await store.insert_points(batch)
            elif kind == "history" and not store.keeps_history:
                counts.not_kept += len(batch)
                continue
            elif kind == "history":
                added = await store.insert_history(batch)
            else:
                added = await db.load_state(kind, batch)
            counts.added += added
            counts.skipped += len(batch) - added
        version = header["state_version"] if not (held or has_state) else min(db.version, header["state_version"])
        if version != db.version:  # upgrades the imported memories have not had run on the next start
            await db.upgraded(version)
    _log.info("imported %s", "; ".join(report.lines()))
    return report


def _check_target(header: dict[str, Any], settings: Settings, store: MemoryStore, report: ImportReport) -> None:
    embedder = header["embedder"]
    if embedder["dims"] != store.dims:
        raise TransferError(f"the file's vectors have {embedder['dims']} dimensions (embedder {embedder['model']}); "
                            f"this store holds {store.dims}: import with the embedder the memories were made with")
    ours = _embedder(settings, store.dims)["model"]
    if embedder["model"] != ours:
        report.notes.append(f"note: the memories were embedded by {embedder['model']}, this bot embeds with {ours}: "
                            "recall needs the same model")


def _checked_file(path: Path) -> dict[str, Any]:
    """The header, once every line of the file has been read and found good (nothing is written before)."""
    found = dict.fromkeys(RECORD_TYPES, 0)
    header: dict[str, Any] = {}
    for kind, record in _records(path):
        if kind == "header":
            header = record
        else:
            found[kind] += 1
    if not header:
        raise TransferError(f"{path} is empty: not a memorybot export")
    short = {kind: (n, found[kind]) for kind, n in header["counts"].items() if found[kind] != n}
    if short:
        described = ", ".join(f"{kind} {want} (found {got})" for kind, (want, got) in short.items())
        raise TransferError(f"{path} does not hold the records its header counts: {described}; the file may be cut "
                            "short: export again")
    return header


def _batches(path: Path) -> Iterator[tuple[str, list[Any]]]:
    """The file's records of one type at a time, up to BATCH each, in the file's order."""
    kind, batch = "", []
    for record_kind, record in _records(path):
        if batch and (record_kind != kind or len(batch) >= BATCH):
            yield kind, batch
            batch = []
        if record_kind != "header":
            kind = record_kind
            batch.append(record)
    if batch:
        yield kind, batch


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    """("header", the header), then (type, record ready to write) of every line after it."""
    try:
        file = path.open("rb")  # lines end at \n only (JSON escapes every other line break)
    except OSError as exc:
        raise TransferError(f"cannot read {path}: {exc.strerror}") from None
    with file:
        dims = 0
        for number, raw in enumerate(file, 1):
            with _at_line(path, number):
                value = _json(raw)
                if number == 1:
                    header = _header(value)
                    dims = header["embedder"]["dims"]
                    kind, record = "header", header
                else:
                    kind, record = _record(value, dims)
            yield kind, record


@contextmanager
def _at_line(path: Path, number: int) -> Iterator[None]:
    try:
        yield
    except _BadLine as exc:
        raise TransferError(f"{path}, line {number}: {exc}") from None


class _BadLine(ValueError):
    """What is wrong with one line (no user's words in it)."""


def _json(raw: bytes) -> Any:
    whole = raw.endswith(b"\n")
    try:
        return json.loads((raw[:-1] if whole else raw).decode("utf-8"))
    except UnicodeDecodeError:
        raise _BadLine("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        cut = "" if whole else "; the file may be cut short"
        raise _BadLine(f"not JSON ({exc.msg.removesuffix(' at')} at column {exc.colno}){cut}") from None


def _header(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise _BadLine(f"not a memorybot export (its first line has no \"format\": \"{FORMAT}\")")
    if value.get("version") != FORMAT_VERSION:
        raise _BadLine(f"export format version {value.get('version')!r} is not one this memorybot reads "
                       f"({FORMAT_VERSION}): import it with the memorybot that wrote it, or a newer one")
    _fields(value, {"schema_version": int, "state_version": int, "embedder": dict, "vector_encoding": str,
                    "counts": dict}, "the header")
    if value["schema_version"] > SCHEMA_VERSION or value["state_version"] > SCHEMA_VERSION:
        raise _BadLine(f"written by a newer memorybot (schema version {value['schema_version']}; this one knows up "
                       f"to {SCHEMA_VERSION}): update memorybot first")
    if value["vector_encoding"] != VECTOR_ENCODING:
        raise _BadLine(f"vector encoding {value['vector_encoding']!r} is not known (expected {VECTOR_ENCODING})")
    _fields(value["embedder"], {"model": str, "dims": int}, "the header's embedder")
    counts = value["counts"]
    needed = [kind for kind in RECORD_TYPES if kind not in ADDED_SINCE]
    if not set(needed) <= set(counts) <= set(RECORD_TYPES) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts.values()):
        raise _BadLine(f"the header's counts must give a number for each of {', '.join(needed)}")
    # a file from before a type was added counts none of it, and holds none
    return {**value, "counts": {kind: counts.get(kind, 0) for kind in RECORD_TYPES}}


def _record(value: Any, dims: int) -> tuple[str, Any]:
    """A record's type and what is written for it: a `Point` for a memory, the fields for the others."""
    if not isinstance(value, dict):
        raise _BadLine("not a JSON object")
    kind = value.get("type")
    if kind not in RECORD_TYPES:
        raise _BadLine(f"unknown record type {kind!r} (expected one of {', '.join(RECORD_TYPES)})")
    if kind == "memory":
        return kind, _point(value, dims)
    if kind == "history":
        return kind, _fields(value, _HISTORY_FIELDS, "history row")
    record = _fields(value, STATE_TABLES[kind].fields, f"{kind} record")
    if kind == "pending":
        try:
            QueuedExchange.from_json(record["payload"])
        except ValueError:
            raise _BadLine("pending record: its payload is not a queued exchange") from None
    return kind, record


def _point(value: dict[str, Any], dims: int) -> Point:
    record = _fields(value, {"id": str, "vector": str, "payload": dict}, "memory")
    try:
        uuid.UUID(record["id"])
    except ValueError:
        raise _BadLine("memory: its id is not a UUID") from None
    name = f"memory {record['id']}"
    if not isinstance(record["payload"].get("user_id"), str) or not isinstance(record["payload"].get("data"), str):
        raise _BadLine(f"{name}: its payload has no user_id or no data")
    try:
        data = base64.b64decode(record["vector"], validate=True)
    except (binascii.Error, ValueError):
        raise _BadLine(f"{name}: its vector is not base64") from None
    size = _VECTOR_DTYPE.itemsize
    if len(data) % size:
        raise _BadLine(f"{name}: its vector is {len(data)} bytes, not a whole number of float32 values")
    if len(data) != dims * size:
        raise _BadLine(f"{name}: its vector has {len(data) // size} dimensions, the header says {dims}")
    return Point(record["id"], np.frombuffer(data, dtype=_VECTOR_DTYPE).copy(), record["payload"])


def _fields(value: dict[str, Any], fields: dict[str, Any], what: str) -> dict[str, Any]:
    """The `fields` of `value`, each checked against its JSON type (str, int, float, dict; `(str, None)` also
    allows null); a float field takes an integer too."""
    record = {}
    for name, expected in fields.items():
        if name not in value:
            raise _BadLine(f"{what}: no {name!r}")
        item = value[name]
        allowed = expected if isinstance(expected, tuple) else (expected,)
        if not any(_is(item, kind) for kind in allowed):
            raise _BadLine(f"{what}: {name!r} is not {' or '.join(_name(kind) for kind in allowed)}")
        record[name] = item
    return record


def _is(item: Any, kind: Any) -> bool:
    if kind is None:
        return item is None
    if kind is float:
        return isinstance(item, int | float) and not isinstance(item, bool)
    if kind is int:
        return isinstance(item, int) and not isinstance(item, bool)
    return isinstance(item, kind)


def _name(kind: Any) -> str:
    return {None: "null", str: "a string", int: "an integer", float: "a number", dict: "an object"}.get(kind, "?")


# --- both


@asynccontextmanager
async def _opened(settings: Settings) -> AsyncIterator[tuple[MemoryStore, BotDatabase]]:
    """The store and the bot database of `settings`, with DATA_DIR locked as a running bot locks it when the state
    is in SQLite there (a bot running on it is refused; embedded Qdrant refuses a second process itself)."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        lock = None if settings.memory.database_url else lock_data_dir(settings.data_dir)
    except SettingsError:
        raise TransferError(f"DATA_DIR {settings.data_dir} is in use by a running memorybot: stop it first") from None
    try:
        async with open_store(settings) as opened:
            yield opened
    finally:
        if lock is not None:
            lock.close()
