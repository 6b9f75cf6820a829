"""Fact extraction benchmark: the bot's real extractor scored on a labeled set of single messages.

    .venv/bin/python bench/extraction.py [--backend openvino|transformers|llama_cpp] [--weights int4|int8]
        [--model qwen2.5-coder-0.5b]
        [--kinds single multiple ...] [--split tune|check|all] [--limit N]
        [--set bench/extraction_set.jsonl] [--out bench/results/extraction.json]

Every message of the set goes through `bot.extraction.FactExtractor(model).extract(text, said_at, user_name,
context=context, preemptible=False)`, prepared as the handler prepares it (control and zero-width characters
out, cut to MAX_INPUT_CHARS; a message left empty is never queued, so it yields no facts without the model).

The set (bench/extraction_set.jsonl) is one JSON object a line:
  id, kind, split ("tune" or "check": every fifth item of a kind, to check prompt tuning on unseen items),
  said_at (ISO time), user_name, context (the bot's previous message, or null), text, facts, never.
  `text` is a string, or a list of strings and {"repeat": STRING, "times": N} parts joined (long pastes).
  `facts` are the gold facts. An extracted fact matches a gold fact when it contains, case-insensitively, every
  string of the gold fact's "all" and at least one string of each list in its "any". A gold fact marked
  "optional" is true and worth keeping but not required (an extra detail, a negation beside the update): it makes
  a fact correct but does not count towards recall. `never` holds strings no extracted fact may contain: what
  only the bot or other people said, a negated thing, an example value.

Scoring, per kind, per split and overall:
  precision  extracted facts that are correct / extracted facts. Correct: matches a gold fact of its message and
             contains no `never` string; every fact from a message without gold facts is a false positive.
  recall     gold facts matched by a correct extracted fact / gold facts (one fact may match several).
  from_bot_or_others  extracted facts containing a `never` string.
  dated items         items with a gold fact that names a year (a resolved date); resolved when all those gold
                      facts are matched and no extracted fact still says "yesterday", "next week", "in two
                      weeks" and the like. For the relative_date kind this is the share of resolved dates.
  no_fact_items_silent  messages without gold facts that gave no facts at all.
  extraction seconds p50/p95 and the peak resident memory of the process (the model included).
Aggregates go to --out and a bar chart per kind beside it (.png: precision, recall, and the share of messages
without gold facts that gave none); per-message details (extracted, matched, missed, the extractor's log
lines, such as facts dropped as ungrounded) to bench/data/extraction/details-<out stem>.json, which git ignores.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import re
import resource
import sys
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tqdm import tqdm  # noqa: E402

from bot.extraction import ExtractionError, FactExtractor  # noqa: E402
from bot.llm import load_backend  # noqa: E402
from bot.llm.base import ModelError  # noqa: E402
from bot.llm.runner import LocalModel  # noqa: E402
from bot.settings import Settings, load_settings  # noqa: E402
from bot.text import clean_input, truncate  # noqa: E402

DEFAULT_SET = REPO / "bench" / "extraction_set.jsonl"
DETAILS = REPO / "bench" / "data" / "extraction"
MODEL_CACHE = REPO / ".cache" / "test-data" / "models"  # the tests' converted models, shared
KINDS = ("single", "multiple", "question", "smalltalk", "code", "negation_update", "relative_date", "language_es",
         "language_de", "other_people", "bot_context", "bad_input")
SPLITS = ("tune", "check")
_YEAR = re.compile(r"\b(?:19|20)\d\d\b")
# what a fact still says when a relative time was not turned into a date (the extractor's own replacements,
# "in the week before 14 March 2026", do not match)
_RELATIVE = re.compile(
    r"\b(?:yesterday|tomorrow|today|tonight|ago|(?:next|last|this|coming) (?:week|weekend|month|year|monday|"
    r"tuesday|wednesday|thursday|friday|saturday|sunday)|in (?:a|one|two|three|four|five|six|ten|\d+) "
    r"(?:days?|weeks?|months?|years?)|the (?:weekend|week|day) after next|mañana|ayer|morgen|gestern|"
    r"nächsten?|el año pasado|letzte[nm]?)\b",
    re.IGNORECASE,
)


def fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


# --- the set


@dataclass(frozen=True)
class GoldFact:
    all: tuple[str, ...]
    any: tuple[tuple[str, ...], ...]
    optional: bool = False  # a true fact worth keeping but not required: counts for precision, not recall

    def matches(self, fact: str) -> bool:
        text = fold(fact)
        return all(fold(t) in text for t in self.all) and all(
            any(fold(t) in text for t in group) for group in self.any
        )

    @property
    def dated(self) -> bool:
        """Whether the fact carries a resolved date (some term names a year)."""
        return any(_YEAR.search(t) for t in (*self.all, *(t for g in self.any for t in g)))

    def describe(self) -> str:
        return " & ".join([*self.all, *("(" + " | ".join(g) + ")" for g in self.any)])


@dataclass(frozen=True)
class Item:
    id: str
    kind: str
    split: str
    said_at: datetime
    user_name: str | None
    context: str | None
    text: str
    facts: tuple[GoldFact, ...]
    never: tuple[str, ...]


def expand(text: str | list[Any]) -> str:
    """A message as stored: a string, or parts joined, {"repeat": s, "times": n} standing for s * n."""
    if isinstance(text, str):
        return text
    return "".join(p if isinstance(p, str) else p["repeat"] * int(p["times"]) for p in text)


def parse_item(row: dict[str, Any]) -> Item:
    said_at = datetime.fromisoformat(row["said_at"])
    if said_at.tzinfo is None:
        raise ValueError("said_at needs a time zone")
    if row["kind"] not in KINDS or row["split"] not in SPLITS:
        raise ValueError(f"unknown kind {row['kind']!r} or split {row['split']!r}")
    facts = []
    for fact in row["facts"]:
        gold = GoldFact(tuple(fact.get("all", [])), tuple(tuple(g) for g in fact.get("any", [])),
                        bool(fact.get("optional", False)))
        terms = [*gold.all, *(t for g in gold.any for t in g)]
        if not terms or any(not g for g in gold.any) or not all(t.strip() for t in terms):
            raise ValueError(f"gold fact {fact} has an empty term or no terms")
        facts.append(gold)
    return Item(row["id"], row["kind"], row["split"], said_at, row.get("user_name"), row.get("context"),
                expand(row["text"]), tuple(facts), tuple(row.get("never", [])))


def load_set(path: Path) -> list[Item]:
    items: list[Item] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(parse_item(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"{path}:{number}: {exc}") from None
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{path}: duplicate ids")
    return items


def select(items: list[Item], kinds: list[str], split: str, limit: int | None) -> list[Item]:
    """The items asked for; with `limit`, taken in turn from each kind, so a short run still sees every kind."""
    chosen = [i for i in items if i.kind in kinds and (split == "all" or i.split == split)]
    if limit is None:
        return chosen
    queues = [[i for i in chosen if i.kind == kind] for kind in kinds]
    picked: list[Item] = []
    while len(picked) < limit and any(queues):
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    return picked


# --- running the extractor


@dataclass
class Outcome:
    facts: list[str] = field(default_factory=list)
    seconds: float | None = None
    error: str | None = None
    raw: str | None = None  # the model's answer, when it did not parse
    skipped: str | None = None
    log: list[str] = field(default_factory=list)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def extractor_log() -> Iterator[list[str]]:
    """What `bot.extraction` logs meanwhile (retries, facts dropped as not found in the message)."""
    logger = logging.getLogger("bot.extraction")
    handler, level, propagate = _Collect(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # kept for the details, not printed: the facts' text would fill the terminal
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


async def extract(extractor: FactExtractor, item: Item, max_input_chars: int) -> Outcome:
    text, _ = truncate(clean_input(item.text), max_input_chars)  # as the handler queues it
    if not text:
        return Outcome(skipped="empty after cleaning (the handler queues nothing)")
    outcome = Outcome()
    with extractor_log() as lines:
        started = time.perf_counter()
        try:
            outcome.facts = await extractor.extract(text, item.said_at, item.user_name, context=item.context,
                                                    preemptible=False)
        except ExtractionError as exc:  # the worker sets such an exchange aside: no facts from it
            outcome.error, outcome.raw = str(exc), exc.raw
        outcome.seconds = time.perf_counter() - started
    outcome.log = list(lines)
    return outcome


# --- scoring


def score(item: Item, outcome: Outcome) -> dict[str, Any]:
    never_hits = {f: [n for n in item.never if fold(n) in fold(f)] for f in outcome.facts}
    correct = [f for f in outcome.facts if not never_hits[f] and any(g.matches(f) for g in item.facts)]
    required = [g for g in item.facts if not g.optional]
    matched = [g for g in required if any(g.matches(f) for f in correct)]
    unresolved = [f for f in outcome.facts if _RELATIVE.search(f)]
    dated = [g for g in required if g.dated]
    text = item.text if len(item.text) <= 400 else f"{item.text[:400]}… ({len(item.text)} characters)"
    return {
        "id": item.id, "kind": item.kind, "split": item.split, "said_at": item.said_at.isoformat(),
        "user_name": item.user_name, "context": item.context, "text": text,
        "extracted": outcome.facts,
        "correct": correct,
        "wrong": [f for f in outcome.facts if f not in correct],
        "gold": [g.describe() for g in required],
        "acceptable": [g.describe() for g in item.facts if g.optional],
        "matched": [g.describe() for g in matched],
        "missed": [g.describe() for g in required if g not in matched],
        "from_bot_or_others": {f: hits for f, hits in never_hits.items() if hits},
        "unresolved_relative_date": unresolved,
        "dated": bool(dated),
        "dated_resolved": bool(dated) and all(g in matched for g in dated) and not unresolved,
        "seconds": None if outcome.seconds is None else round(outcome.seconds, 3),
        "error": outcome.error, "raw": outcome.raw, "skipped": outcome.skipped, "log": outcome.log,
    }


def pct(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 2) if ordered else None


def ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    extracted = sum(len(r["extracted"]) for r in rows)
    correct = sum(len(r["correct"]) for r in rows)
    gold = sum(len(r["gold"]) for r in rows)
    matched = sum(len(r["matched"]) for r in rows)
    precision, recall = ratio(correct, extracted), ratio(matched, gold)
    f1 = None
    if precision is not None and recall is not None:
        f1 = round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0
    no_facts = [r for r in rows if not r["gold"]]
    dated = [r for r in rows if r["dated"]]
    seconds = [r["seconds"] for r in rows if r["seconds"] is not None]
    return {
        "items": len(rows), "precision": precision, "recall": recall, "f1": f1,
        "extracted": extracted, "correct": correct, "false_positives": extracted - correct,
        "gold_facts": gold, "gold_matched": matched,
        "from_bot_or_others": sum(len(r["from_bot_or_others"]) for r in rows),
        "no_fact_items": len(no_facts), "no_fact_items_silent": sum(not r["extracted"] for r in no_facts),
        "dated_items": len(dated), "dated_items_resolved": sum(r["dated_resolved"] for r in dated),
        "facts_with_unresolved_relative_date": sum(len(r["unresolved_relative_date"]) for r in rows),
        "errors": sum(r["error"] is not None for r in rows),
        "extraction_s": {"p50": pct(seconds, 0.5), "p95": pct(seconds, 0.95), "total": round(sum(seconds), 1)},
    }


def report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = [k for k in KINDS if any(r["kind"] == k for r in rows)]
    splits = [s for s in SPLITS if any(r["split"] == s for r in rows)]
    relative = [r for r in rows if r["kind"] == "relative_date"]
    return {
        "overall": summarize(rows),
        "by_kind": {k: summarize([r for r in rows if r["kind"] == k]) for k in kinds},
        "by_split": {s: summarize([r for r in rows if r["split"] == s]) for s in splits},
        "relative_dates_resolved": {"items": len(relative),
                                    "resolved": sum(r["dated_resolved"] for r in relative),
                                    "share": ratio(sum(r["dated_resolved"] for r in relative), len(relative))},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {name: dict(s) for name, s in {"overall": result["overall"], **result["by_kind"]}.items()}
    names = list(groups)
    for g in groups.values():
        g["silent"] = ratio(g["no_fact_items_silent"], g["no_fact_items"])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 4.5))
    width = 0.27
    bars_of = [(-width, "precision", "precision"), (0.0, "recall", "recall"),
               (width, "silent", "no facts from messages without any")]
    for offset, metric, label in bars_of:
        values = [groups[n][metric] for n in names]
        bars = ax.bar([x + offset for x in range(len(names))], [v or 0.0 for v in values], width, label=label)
        ax.bar_label(bars, labels=["–" if v is None else f"{v:.2f}" for v in values], fontsize=6)
    ax.set_xticks(range(len(names)), [f"{n}\n({groups[n]['items']})" for n in names], fontsize=7, rotation=30)
    ax.set_ylim(0, 1.2)
    ax.legend(fontsize=7, loc="upper center", ncol=3)
    cfg = result["config"]
    ax.set_title(f"fact extraction: {cfg['model']} ({cfg['backend']}), split {cfg['split']}, {cfg['items']} messages"
                 , fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main


def link_model_cache(data_dir: Path) -> None:
    """The run's DATA_DIR gets the tests' converted models, so the bundled model is joined and converted once."""
    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    (data_dir / "models").symlink_to(MODEL_CACHE, target_is_directory=True)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


async def run(items: list[Item], settings: Settings) -> list[dict[str, Any]]:
    backend = await asyncio.to_thread(load_backend, settings)
    model = LocalModel(backend, settings.model.generation_queue_size)
    extractor = FactExtractor(model)
    rows: list[dict[str, Any]] = []
    try:
        for item in tqdm(items, desc="extract", unit="msg"):
            rows.append(score(item, await extract(extractor, item, settings.model.max_input_chars)))
    finally:
        await model.close()
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["openvino", "transformers", "llama_cpp"], default="openvino")
    parser.add_argument("--weights", choices=["int4", "int8"], default="int8", help="OPENVINO_WEIGHTS")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b",
                        help="a bundled model (qwen2.5-coder-0.5b, qwen2.5-coder-1.5b if installed) or a MODEL value")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--split", choices=[*SPLITS, "all"], default="all")
    parser.add_argument("--limit", type=int, help="at most N messages, taken in turn from each kind")
    parser.add_argument("--set", type=Path, default=DEFAULT_SET, help="the labeled set (JSON lines)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "extraction.json")
    return parser.parse_args()


async def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("bot.llm").setLevel(logging.INFO)  # says so when the model is converted (first run only)
    items = select(load_set(args.set), args.kinds, args.split, args.limit)
    if not items:
        raise SystemExit("no items selected")
    with tempfile.TemporaryDirectory(prefix="memorybot-extraction-") as tmp:
        data_dir = Path(tmp)
        link_model_cache(data_dir)
        settings = load_settings(env_file=None, data_dir=data_dir, model=args.model, model_backend=args.backend,
                                 openvino_weights=args.weights)
        started = time.perf_counter()
        try:
            rows = await run(items, settings)
        except ModelError as exc:
            raise SystemExit(f"model {args.model}: {exc}") from None
    result: dict[str, Any] = {
        "config": {"set": args.set.name, "set_sha256": digest(args.set),
                   "extractor_sha256": digest(REPO / "bot" / "extraction.py"),
                   "model": args.model, "backend": args.backend,
                   "weights": args.weights if args.backend == "openvino" else None, "kinds": args.kinds,
                   "split": args.split,
                   "limit": args.limit, "items": len(rows),
                   "max_input_chars": settings.model.max_input_chars, "model_threads": settings.model.threads,
                   "cpus": os.cpu_count()},
        **report(rows),
        "wall_s": round(time.perf_counter() - started, 1),  # the model's loading included
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    plot(result, args.out.with_suffix(".png"))
    DETAILS.mkdir(parents=True, exist_ok=True)
    details = DETAILS / f"details-{args.out.stem}.json"
    details.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: result[k] for k in ["overall", "by_split", "relative_dates_resolved", "peak_rss_mb"]},
                     indent=2))
    for kind, s in result["by_kind"].items():
        print(f"{kind:16} items {s['items']:3}  precision {s['precision']}  recall {s['recall']}  "
              f"from_bot_or_others {s['from_bot_or_others']}  silent {s['no_fact_items_silent']}/{s['no_fact_items']}")
    print(f"wrote {args.out}, {args.out.with_suffix('.png')} and {details}")


if __name__ == "__main__":
    asyncio.run(main())
