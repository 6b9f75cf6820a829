"""LoCoMo memory benchmark: evidence recall@k and answer F1 through the bot's real memory path, against raw turns.

    .venv/bin/python bench/locomo.py [DATA] [--conversations conv-26 ...] [--limit-questions N] [--max-sessions N]
        [--k 5 10 20] [--systems memory turns turns-hybrid evidence] [--answer [SYSTEM ...]] [--answer-questions 20]
        [--channels dense keyword entity time] [--kinds fact message] [--facts user|speaker]
        [--backend transformers|llama_cpp] [--fresh] [--out bench/results/locomo.json]

DATA defaults to ../shared/data/locomo/locomo-dev.json (CC BY-NC 4.0: evaluation only, never copied into the
repository). Each conversation is one user's memory space (platform "locomo", workspace = sample_id, user
"memory"), ingested session by session, in order, through the write-back worker's own steps: the turn kept as
the user's message (`Learning.passages` / `keep_passage`), then `FactExtractor.extract` on "Speaker: text"
with the session's date as the time it was said, then `Learning.learn`, each with a `Source` whose
`message_id` is the turn's `dia_id`, so every stored memory maps back to the turn it came from. The model's
answers (extraction and question answering) are cached by a hash of (prompt, generation parameters, model) in
`bench/data/locomo/answer-cache.sqlite3`, so the extractor's own checks rerun on every ingest, and the built
store is kept (`bench/data/locomo/store-<facts>`,
rebuilt per conversation when its turns or the write path's code change, or with `--fresh`), so a rerun after a
recall change takes minutes.

For every question of categories 1-4 (5, adversarial, is skipped by convention) each system retrieves; evidence
recall@k is the share of the gold `dia_id`s covered by the provenance of the top k. Systems:
  memory         the bot's recall (`Recall.relevant`): facts and message passages through every recall channel
                 (`--channels`, default the bot's; `--kinds` restricts the kinds recalled, for ablations);
  turns          baseline: raw turns embedded with all-MiniLM-L6-v2 (sentence-transformers), top k by cosine;
  turns-hybrid   baseline: the same turns, cosine fused with FTS5 keyword (BM25) ranking by reciprocal rank;
  evidence       a ceiling, not a system: the gold evidence turns handed over (for answer F1).
Systems listed in `--answer` also answer every question with the bundled model from their top `--answer-k`
items (a bullet list, each dated), scored with LoCoMo's token F1. Aggregates go to `--out` and a PNG beside it;
per-question details (they quote the data set) go under `bench/data/locomo/`, which git ignores.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import resource
import shutil
import sqlite3
import statistics
import string
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MEM0_TELEMETRY", "False")

from tqdm import tqdm  # noqa: E402

from bot.app import MemoryBot  # noqa: E402
from bot.extraction import ExtractionError, FactExtractor  # noqa: E402
from bot.llm.base import ChatMessage, GenerationParams  # noqa: E402
from bot.llm.runner import LocalModel  # noqa: E402
from bot.memories import Memories  # noqa: E402
from bot.memories.recall import without_names  # noqa: E402
from bot.message import IncomingMessage, UserRef  # noqa: E402
from bot.settings import Settings, load_settings  # noqa: E402
from memory.recall import CHANNELS  # noqa: E402
from memory.records import (  # noqa: E402
    KINDS,  # noqa: E402
    Source,
)

DEFAULT_DATA = REPO.parent / "shared" / "data" / "locomo" / "locomo-dev.json"
BENCH_DATA = REPO / "bench" / "data" / "locomo"
MODEL_CACHE = REPO / ".cache" / "test-data" / "models"
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
SYSTEMS = ("memory", "turns", "turns-hybrid", "evidence")
RRF_K = 60  # the usual reciprocal-rank-fusion constant
_STOPWORDS = (
    "a an the and or of to in on at for with by from about as is are was were be been being do does did what "
    "when where who whom which why how that this these those it its he she they them his her their i you we "
    "my your our me us has have had will would can could should may might not no any some there here than "
    "then so if into up out over after before during"
)
STOPWORDS = frozenset(_STOPWORDS.split())


# --- the data set


@dataclass(frozen=True)
class Turn:
    dia_id: str
    speaker: str
    text: str  # "Speaker: what they said [shares a photo of ...]"
    said_at: datetime
    session: int


@dataclass(frozen=True)
class Question:
    sample_id: str
    question: str
    answer: str
    evidence: tuple[str, ...]
    category: int


@dataclass(frozen=True)
class Conversation:
    sample_id: str
    speakers: tuple[str, str]
    turns: list[Turn]
    questions: list[Question]


def parse_session_time(value: str) -> datetime:
    """LoCoMo writes session times like "1:56 pm on 8 May, 2023"."""
    return datetime.strptime(value.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)


def turn_text(turn: dict[str, Any]) -> str:
    text = f"{turn['speaker']}: {turn['text']}"
    if turn.get("blip_caption"):
        text += f" [shares a photo of {turn['blip_caption']}]"
    return text


def load_conversations(
    path: Path, wanted: Sequence[str] | None, limit_questions: int | None, max_sessions: int | None = None
) -> list[Conversation]:
    """The chosen samples; with `max_sessions`, only their first sessions and the questions whose evidence all
    lies in them (a smaller haystack, so recall is higher than on whole conversations)."""
    conversations = []
    for sample in json.loads(path.read_text()):
        if wanted and sample["sample_id"] not in wanted:
            continue
        conv = sample["conversation"]
        sessions = sorted(int(k.split("_")[1]) for k in conv if re.fullmatch(r"session_\d+", k))
        sessions = sessions[:max_sessions] if max_sessions else sessions
        turns = [
            Turn(t["dia_id"], t["speaker"], turn_text(t), parse_session_time(conv[f"session_{n}_date_time"]), n)
            for n in sessions
            for t in conv[f"session_{n}"]
        ]
        questions = [
            Question(sample["sample_id"], q["question"], str(q["answer"]),
                     tuple(re.findall(r"D\d+:\d+", " ".join(map(str, q.get("evidence", []))))), q["category"])
            for q in sample["qa"]
            if q["category"] in CATEGORIES and "answer" in q
        ]
        if max_sessions:
            shown = {t.dia_id for t in turns}
            questions = [q for q in questions if q.evidence and set(q.evidence) <= shown]
        conversations.append(Conversation(sample["sample_id"], (conv["speaker_a"], conv["speaker_b"]), turns,
                                          questions[:limit_questions] if limit_questions else questions))
    missing = set(wanted or ()) - {c.sample_id for c in conversations}
    if missing:
        raise SystemExit(f"not in {path}: {', '.join(sorted(missing))}")
    return conversations


# --- LoCoMo's answer scoring (task_eval/evaluation.py in snap-research/locomo, reimplemented from memory)


def normalize_answer(text: str) -> str:
    """Lowercase, drop commas, punctuation and the words a/an/the/and, collapse whitespace."""
    text = text.lower().replace(",", "")
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the|and)\b", " ", text)
    return " ".join(text.split())


def _stemmer() -> Callable[[str], str]:
    from nltk.stem import PorterStemmer

    return PorterStemmer().stem


_stem = _stemmer()


def token_f1(prediction: str, truth: str) -> float:
    pred = [_stem(w) for w in normalize_answer(prediction).split()]
    gold = [_stem(w) for w in normalize_answer(truth).split()]
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def locomo_f1(prediction: str, answer: str, category: int) -> float:
    """Category 1 (multi-hop): the gold answer split at commas, each part's best F1 against the prediction's
    comma-separated parts, averaged. Category 3 keeps the gold answer's part before any ';'."""
    if category == 1:
        predictions = [p.strip() for p in prediction.split(",")]
        parts = [g.strip() for g in answer.split(",")]
        return statistics.mean(max(token_f1(p, g) for p in predictions) for g in parts)
    if category == 3:
        answer = answer.split(";")[0].strip()
    return token_f1(prediction, answer)


# --- the model's answers, cached


class AnswerCache:
    """The model's raw answers keyed by a hash of (model, prompt messages, generation parameters), in SQLite."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL, "
                         "seconds REAL NOT NULL)")

    @staticmethod
    def key(model: str, messages: list[ChatMessage], params: GenerationParams) -> str:
        blob = json.dumps([model, [asdict(m) for m in messages], asdict(params)], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> tuple[str, float] | None:
        row = self._db.execute("SELECT answer, seconds FROM answers WHERE key = ?", (key,)).fetchone()
        return (str(row[0]), float(row[1])) if row else None

    def put(self, key: str, answer: str, seconds: float) -> None:
        self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)", (key, answer, seconds))
        self._db.commit()

    def close(self) -> None:
        self._db.close()


class CachedModel:
    """The bot's `LocalModel` with its answers cached: the extractor runs its whole path (date resolution,
    filters, checks) on every ingest, and only the model's answer to an unchanged prompt is reused."""

    def __init__(self, model: LocalModel, cache: AnswerCache, name: str) -> None:
        self._model, self._cache, self._name = model, cache, name
        self.hits = 0
        self.seconds = 0.0  # model time of the answers used, as measured when each was first computed
        self.seconds_this_run = 0.0

    def __getattr__(self, name: str) -> Any:  # context_tokens, count_tokens, prompt_tokens
        return getattr(self._model, name)

    async def generate(self, messages: list[ChatMessage], params: GenerationParams, **kwargs: Any) -> str:
        key = AnswerCache.key(self._name, messages, params)
        if (found := self._cache.get(key)) is not None:
            self.hits += 1
            self.seconds += found[1]
            return found[0]
        started = time.perf_counter()
        answer = await self._model.generate(messages, params, **kwargs)
        took = time.perf_counter() - started
        self._cache.put(key, answer, took)
        self.seconds += took
        self.seconds_this_run += took
        return answer


# --- ingestion through the write-back path


def user_of(sample_id: str) -> UserRef:
    return UserRef("locomo", sample_id, "memory")


def as_speaker(fact: str, speaker: str) -> str:
    """`--facts speaker`: the extraction prompt writes "The user ..."; name the person who said the turn."""
    fact = re.sub(r"\bThe user's\b", f"{speaker}'s", fact)
    fact = re.sub(r"\b[Tt]he user's\b", f"{speaker}'s", fact)
    return re.sub(r"\b[Tt]he user\b", speaker, fact)


@dataclass
class IngestStats:
    turns: int = 0
    cache_hits: int = 0
    extraction_errors: int = 0
    facts_extracted: int = 0
    facts_stored: int = 0  # new or updated memories (duplicates are not stored)
    passages_stored: int = 0
    extraction_s: float = 0.0  # model time, as measured when the result was first computed
    extraction_s_this_run: float = 0.0
    store_s: float = 0.0


async def ingest(
    conv: Conversation, model: CachedModel, memories: Memories, facts: str, keep_messages: bool,
    extract: bool = True,
) -> IngestStats:
    """Every turn, in session order: keep the turn as the user's message, extract facts (the model's answers
    cached) and learn them, all with the turn as their source."""
    extractor = FactExtractor(model)  # type: ignore[arg-type]  # a LocalModel with cached answers
    stats = IngestStats()
    user_key = user_of(conv.sample_id).key
    hits, seconds, seconds_this_run = model.hits, model.seconds, model.seconds_this_run
    for turn in tqdm(conv.turns, desc=f"ingest {conv.sample_id}", unit="turn"):
        stats.turns += 1
        source = Source(platform="locomo", workspace=conv.sample_id, channel=f"session_{turn.session}",
                        message_id=turn.dia_id, link=None, time=turn.said_at.isoformat())
        if keep_messages:
            started = time.perf_counter()
            for index, passage in enumerate(await memories.learning.passages(turn.text)):
                await memories.learning.keep_passage(user_key, passage, index, source, resumed=False)
                stats.passages_stored += 1
            stats.store_s += time.perf_counter() - started
        if not extract:
            continue
        try:
            found = await extractor.extract(turn.text, turn.said_at, turn.speaker, preemptible=False)
        except ExtractionError:  # the worker sets such an exchange aside: no facts from it
            stats.extraction_errors += 1
            found = []
        stats.facts_extracted += len(found)
        started = time.perf_counter()
        for fact in found:
            text = as_speaker(fact, turn.speaker) if facts == "speaker" else fact
            stats.facts_stored += await memories.learning.learn(user_key, text, source, context=turn.text) is not None
        stats.store_s += time.perf_counter() - started
    stats.cache_hits = model.hits - hits
    stats.extraction_s = round(model.seconds - seconds, 1)
    stats.extraction_s_this_run = round(model.seconds_this_run - seconds_this_run, 1)
    return stats


# --- retrieval systems


@dataclass(frozen=True)
class Hit:
    text: str
    dia_ids: tuple[str, ...]
    said_at: str  # ISO time of the source turn


def keyword_query(text: str) -> str | None:
    words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOPWORDS and len(w) > 1]
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words)) or None


class KeywordIndex:
    """SQLite FTS5 (BM25 ranking, Porter stemming) over a fixed list of texts."""

    def __init__(self, texts: list[str]) -> None:
        self._db = sqlite3.connect(":memory:")
        self._db.execute("CREATE VIRTUAL TABLE docs USING fts5(body, tokenize='porter unicode61')")
        self._db.executemany("INSERT INTO docs(rowid, body) VALUES (?, ?)", enumerate(texts))

    def search(self, query: str, limit: int) -> list[int]:
        match = keyword_query(query)
        if match is None:
            return []
        rows = self._db.execute("SELECT rowid FROM docs WHERE docs MATCH ? ORDER BY bm25(docs) LIMIT ?",
                                (match, limit)).fetchall()
        return [r[0] for r in rows]


def rrf(*rankings: list[int]) -> list[int]:
    scores: dict[int, float] = defaultdict(float)
    for ranking in rankings:
        for rank, item in enumerate(ranking):
            scores[item] += 1.0 / (RRF_K + rank + 1)
    return sorted(scores, key=lambda i: -scores[i])


class TurnBaseline:
    """Raw turns of one conversation, embedded with MiniLM; cosine top k, optionally fused with FTS5."""

    def __init__(self, conv: Conversation, embedder: Any, hybrid: bool) -> None:
        self._turns = conv.turns
        self._embedder = embedder
        self._vectors = embedder.encode([t.text for t in conv.turns], batch_size=32, normalize_embeddings=True,
                                        convert_to_numpy=True)
        self._keywords = KeywordIndex([t.text for t in conv.turns]) if hybrid else None

    async def search(self, question: str, limit: int) -> list[Hit]:
        query = self._embedder.encode([question], normalize_embeddings=True, convert_to_numpy=True)[0]
        ranking = [int(i) for i in (-(self._vectors @ query)).argsort()]
        if self._keywords is not None:
            ranking = rrf(ranking[: limit * 2], self._keywords.search(question, limit * 2))
        return [self._hit(self._turns[i]) for i in ranking[:limit]]

    @staticmethod
    def _hit(turn: Turn) -> Hit:
        return Hit(turn.text, (turn.dia_id,), turn.said_at.isoformat())


class EvidenceOracle:
    """A ceiling, not a system: the question's gold evidence turns, in order, as if recall were perfect. Its
    answer F1 is the best the answering model can do from the right turns."""

    def __init__(self, conv: Conversation, keep_names: bool) -> None:
        by_id = {t.dia_id: t for t in conv.turns}
        self._evidence = {(q.question if keep_names else without_names(q.question, conv.speakers)):
                          [by_id[e] for e in q.evidence if e in by_id] for q in conv.questions}

    async def search(self, question: str, limit: int) -> list[Hit]:
        return [TurnBaseline._hit(turn) for turn in self._evidence.get(question, [])[:limit]]


class MemoryRecall:
    """The bot's recall for this conversation's user (`Recall.relevant`, as a reply does), asked the day after
    the conversation's last session (a question's "last year" means what it meant then)."""

    def __init__(self, conv: Conversation, memories: Memories, settings: Settings, kinds: tuple[str, ...]) -> None:
        self._memories = memories
        self._kinds = kinds
        self._min_score = settings.memory.min_score
        user = user_of(conv.sample_id)
        asked = max(t.said_at for t in conv.turns) + timedelta(days=1)
        self._msg = IncomingMessage(platform=user.platform, workspace=user.workspace, channel_id="qa",
                                    user_id=user.user_id, user_name="memory", text="", message_id="q",
                                    sent_at=asked)

    async def search(self, question: str, limit: int) -> list[Hit]:
        found = await self._memories.recall.relevant(self._msg, question, limit, self._min_score, kinds=self._kinds)
        return [Hit(r.text, (r.source.message_id,), r.source.time) for r in found]


# --- answering


ANSWER_SYSTEM = (
    "You answer questions about a long conversation between {a} and {b}, using only the notes below. "
    "Each note starts with the date it was said."
)
ANSWER_USER = (
    "Notes:\n{bullets}\n\n"
    "Based on the notes above, write an answer in the form of a short phrase for the following question. "
    "Answer with exact words from the notes whenever possible; for a question about when, give the date.\n"
    "Question: {question} Short answer:"
)


def answer_messages(conv: Conversation, question: str, hits: list[Hit]) -> list[ChatMessage]:
    bullets = "\n".join(f"- ({_day(h.said_at)}) {h.text}" for h in hits) or "- (none)"
    return [ChatMessage("system", ANSWER_SYSTEM.format(a=conv.speakers[0], b=conv.speakers[1])),
            ChatMessage("user", ANSWER_USER.format(bullets=bullets, question=question))]


def _day(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%d %B %Y").lstrip("0")
    except ValueError:
        return "unknown date"


# --- evaluation


@dataclass
class SystemScores:
    recall: dict[int, list[list[float]]] = field(default_factory=lambda: defaultdict(list))  # category -> per k
    f1: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    latency_ms: list[float] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    answer_s: list[float] = field(default_factory=list)


def evidence_recall(hits: list[Hit], evidence: tuple[str, ...], k: int) -> float:
    covered = {d for h in hits[:k] for d in h.dia_ids}
    return sum(e in covered for e in set(evidence)) / len(set(evidence))


async def evaluate(
    conv: Conversation,
    systems: dict[str, Any],
    answering: set[str],
    model: LocalModel,
    ks: list[int],
    answer_k: int,
    scores: dict[str, SystemScores],
    details: list[dict[str, Any]],
    keep_names: bool,
    answer_questions: int,
) -> None:
    params = GenerationParams(max_new_tokens=32, temperature=0.0, repetition_penalty=1.15, stop=("\n",))
    for number, q in enumerate(tqdm(conv.questions, desc=f"questions {conv.sample_id}", unit="q")):
        row: dict[str, Any] = {"sample_id": q.sample_id, "question": q.question, "answer": q.answer,
                               "category": q.category, "evidence": q.evidence, "systems": {}}
        # The conversation is one user's memory space, and the bot drops the user's own name from a query
        # (Recall.relevant): here both speakers are that user. Every system gets the same query.
        query = q.question if keep_names else without_names(q.question, conv.speakers)
        for name, system in systems.items():
            s = scores[name]
            started = time.perf_counter()
            hits = await system.search(query, max(ks + [answer_k]))
            s.latency_ms.append((time.perf_counter() - started) * 1000)
            out: dict[str, Any] = {"retrieved": [h.dia_ids[0] for h in hits[: max(ks)]]}
            if q.evidence:
                values = [evidence_recall(hits, q.evidence, k) for k in ks]
                s.recall[q.category].append(values)
                out["recall"] = dict(zip(map(str, ks), values, strict=True))
            if name in answering and number < answer_questions:
                messages = answer_messages(conv, q.question, hits[:answer_k])
                s.prompt_tokens.append(model.prompt_tokens(messages))
                started = time.perf_counter()
                prediction = (await model.generate(messages, params)).strip().splitlines()[0:1]
                s.answer_s.append(time.perf_counter() - started)
                text = prediction[0].strip() if prediction else ""
                s.f1[q.category].append(locomo_f1(text, q.answer, q.category))
                out.update(prediction=text, f1=s.f1[q.category][-1])
            row["systems"][name] = out
        details.append(row)


def per_conversation(details: list[dict[str, Any]], systems: list[str], ks: list[int]) -> dict[str, Any]:
    """Recall@k (and F1 where answered) of each system in each conversation: the check conversations are
    reported one by one."""
    out: dict[str, Any] = {}
    for sample in dict.fromkeys(row["sample_id"] for row in details):
        rows = [row["systems"] for row in details if row["sample_id"] == sample]
        out[sample] = {}
        for name in systems:
            recalls = [r[name]["recall"] for r in rows if "recall" in r[name]]
            entry = {f"@{k}": round(statistics.mean(x[str(k)] for x in recalls), 4) for k in ks if recalls}
            f1s = [r[name]["f1"] for r in rows if "f1" in r[name]]
            if f1s:
                entry["f1"] = round(statistics.mean(f1s), 4)
            out[sample][name] = entry
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def summarize(s: SystemScores, ks: list[int]) -> dict[str, Any]:
    def mean(values: list[float]) -> float | None:
        return round(statistics.mean(values), 4) if values else None

    recall: dict[str, Any] = {}
    for i, k in enumerate(ks):
        per_cat = {CATEGORIES[c]: mean([v[i] for v in s.recall[c]]) for c in sorted(s.recall)}
        every = [v[i] for c in s.recall for v in s.recall[c]]
        recall[f"@{k}"] = {"overall": mean(every), **per_cat}
    out: dict[str, Any] = {
        "recall": recall,
        "questions_with_evidence": {CATEGORIES[c]: len(v) for c, v in sorted(s.recall.items())},
        "recall_latency_ms": {"p50": round(pct(s.latency_ms, 0.5), 2), "p95": round(pct(s.latency_ms, 0.95), 2)},
    }
    if any(s.f1.values()):
        out["f1"] = {"overall": mean([v for vs in s.f1.values() for v in vs]),
                     **{CATEGORIES[c]: mean(v) for c, v in sorted(s.f1.items())}}
        out["questions_answered"] = sum(len(v) for v in s.f1.values())
        out["prompt_tokens_per_answer"] = {"mean": round(statistics.mean(s.prompt_tokens), 1),
                                           "p95": pct([float(t) for t in s.prompt_tokens], 0.95)}
        out["answer_s"] = {"p50": round(pct(s.answer_s, 0.5), 2), "p95": round(pct(s.answer_s, 0.95), 2)}
    return out


def plot(result: dict[str, Any], path: Path, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = ["overall", *CATEGORIES.values()]
    systems = result["systems"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    panels = [(axes[0], f"evidence recall@{k}", lambda s: s["recall"].get(f"@{k}", {})),
              (axes[1], "answer F1 (LoCoMo token F1)", lambda s: s.get("f1", {}))]
    for ax, title, values_of in panels:
        shown = [n for n in systems if values_of(systems[n])]
        width = 0.8 / max(1, len(shown))
        for i, name in enumerate(shown):
            values = [values_of(systems[name]).get(g) or 0.0 for g in groups]
            bars = ax.bar([x + i * width for x in range(len(groups))], values, width, label=name)
            ax.bar_label(bars, fmt="%.2f", fontsize=6)
        ax.set_xticks([x + width * (len(shown) - 1) / 2 for x in range(len(groups))], groups)
        ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.legend(fontsize=8)
    cfg = result["config"]
    scope = f" (first {cfg['max_sessions']} sessions)" if cfg.get("max_sessions") else ""
    fig.suptitle(f"LoCoMo {', '.join(cfg['conversations'])}{scope}: {result['questions']} questions (categories 1-4), "
                 f"facts={cfg['facts']}, answers from top {cfg['answer_k']} with {cfg['model']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main


WRITE_PATH = ["bot/extraction.py", "bot/dates.py", "bot/memories/learning.py", "bot/supersede.py", "memory/store.py",
              "memory/passages.py"]


def prepare_data_dir(path: Path, fresh: bool) -> None:
    """The run's folder: the memory store (wiped with `fresh`) and the converted model, linked from the test cache."""
    stale = ["memory", "bot.sqlite3", "bot.sqlite3-wal", "bot.sqlite3-shm", "ingested.json"] if fresh else []
    for name in stale:
        target = path / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "models").exists() and MODEL_CACHE.is_dir():
        (path / "models").symlink_to(MODEL_CACHE, target_is_directory=True)


def ingest_signature(conv: Conversation, args: argparse.Namespace, model: str) -> str:
    """What a stored conversation depends on: its turns, the fact mode, the model and the write path's code."""
    digest = hashlib.sha256(json.dumps([[asdict(t) for t in conv.turns], args.facts, model], default=str).encode())
    for name in WRITE_PATH:
        digest.update((REPO / name).read_bytes())
    return digest.hexdigest()[:16]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA, help="locomo JSON (a list of samples)")
    parser.add_argument("--conversations", nargs="+", help="sample ids to run (default: all)")
    parser.add_argument("--limit-questions", type=int, help="first N questions of categories 1-4 per conversation")
    parser.add_argument("--max-sessions", type=int, help="ingest only the first N sessions (and their questions)")
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 20], help="recall@k cut-offs")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=["memory", "turns", "turns-hybrid"])
    parser.add_argument("--answer", nargs="*", choices=SYSTEMS,
                        help="systems that also answer with the model (~2-4 s per question each); the flag alone: "
                             "every system run")
    parser.add_argument("--answer-k", type=int, default=10, help="retrieved items shown to the answering model")
    parser.add_argument("--answer-questions", type=int, default=20,
                        help="answer the first N questions of each conversation (recall covers all of them)")
    parser.add_argument("--channels", nargs="+", choices=CHANNELS,
                        help="recall channels of the memory system (default: the bot's, MEMORY_RECALL_CHANNELS)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                        help="kinds of memory the memory system recalls (an ablation: the bot recalls both)")
    parser.add_argument("--facts", choices=["user", "speaker"], default="speaker",
                        help='store facts as extracted ("The user ...") or with the speaker\'s name (one memory '
                             'space holds both speakers here)')
    parser.add_argument("--backend", choices=["transformers", "llama_cpp"], default="llama_cpp",
                        help="the generation backend for extraction and answers (llama_cpp is ~2x faster here)")
    parser.add_argument("--keep-names", action="store_true",
                        help="search with the question as asked, the speakers' names left in")
    parser.add_argument("--messages-only", action="store_true",
                        help="an ablation: ingest the turns as messages without extracting facts (no model time)")
    parser.add_argument("--fresh", action="store_true", help="rebuild the memory store even if it is up to date")
    parser.add_argument("--data-dir", type=Path, default=BENCH_DATA, help="cache and memory store")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "locomo.json")
    args = parser.parse_args()
    args.k = sorted(set(args.k))
    args.answer = args.systems if args.answer == [] else [s for s in args.answer or [] if s in args.systems]
    return args


async def main() -> None:
    args = parse_args()
    conversations = load_conversations(args.data, args.conversations, args.limit_questions, args.max_sessions)
    run_dir = args.data_dir / ("store-messages-only" if args.messages_only else f"store-{args.facts}"
                               + ("" if args.backend == "transformers" else f"-{args.backend}"))
    prepare_data_dir(run_dir, args.fresh)
    marker = run_dir / "ingested.json"
    ingested: dict[str, Any] = json.loads(marker.read_text()) if marker.exists() else {}
    overrides: dict[str, Any] = {"memory_recall_channels": frozenset(args.channels)} if args.channels else {}
    settings = load_settings(env_file=None, data_dir=run_dir, rate_limit_messages=0, model_backend=args.backend,
                             **overrides)
    # extraction results depend on the backend too (llama.cpp decodes under a JSON grammar)
    model_id = settings.model.name if args.backend == "transformers" else f"{settings.model.name}@{args.backend}"
    cache = AnswerCache(args.data_dir / "answer-cache.sqlite3")
    result: dict[str, Any] = {
        "config": {"data": args.data.name, "conversations": [c.sample_id for c in conversations],
                   "limit_questions": args.limit_questions, "max_sessions": args.max_sessions,
                   "k": args.k, "answer_k": args.answer_k,
                   "facts": args.facts, "keep_names": args.keep_names, "model": model_id,
                   "messages_only": args.messages_only,
                   "memory_min_score": settings.memory.min_score,
                   "channels": sorted(settings.memory.recall_channels), "kinds": args.kinds,
                   "keep_messages": settings.memory.keep_messages,
                   "systems": args.systems, "answering": args.answer, "cpus": os.cpu_count()},
    }
    scores = {name: SystemScores() for name in args.systems}
    details: list[dict[str, Any]] = []
    ingestion: dict[str, Any] = {}
    async with MemoryBot(settings) as bot:
        await bot.writeback.stop()  # the bench drives the worker's path itself, turn by turn, in order
        assert bot.model is not None
        from sentence_transformers import SentenceTransformer

        from memory.config import bundled_embedder_path

        embedder = SentenceTransformer(bundled_embedder_path(), device="cpu")
        for conv in conversations:
            signature = ingest_signature(conv, args, model_id)
            user_key = user_of(conv.sample_id).key
            if not any(name.startswith("memory") for name in args.systems):  # nothing reads the store
                stats_row = {"skipped": True}
            elif ingested.get(conv.sample_id, {}).get("signature") == signature:
                stats_row = ingested[conv.sample_id] | {"reused_store": True}
            else:  # stale or missing: this conversation's memories are rebuilt from the extraction cache
                await bot.store.delete_all(user_key)
                started = time.perf_counter()
                stats = await ingest(conv, CachedModel(bot.model, cache, model_id), bot.memories, args.facts,
                                     settings.memory.keep_messages, extract=not args.messages_only)
                stats_row = asdict(stats) | {"wall_s": round(time.perf_counter() - started, 1), "signature": signature}
                ingested[conv.sample_id] = stats_row
                marker.write_text(json.dumps(ingested, indent=1))
            records = await bot.store.list(user_key, kinds=("fact",)) if not stats_row.get("skipped") else []
            stats_row["facts_current"] = len(records)
            if records:  # the ceiling of any recall over facts: the gold turns that taught at least one
                taught = {r.source.message_id for r in records}
                gold = {e for q in conv.questions for e in q.evidence}
                stats_row["evidence_turns_with_facts"] = round(len(gold & taught) / max(1, len(gold)), 3)
            ingestion[conv.sample_id] = stats_row
            print(conv.sample_id, json.dumps(stats_row), flush=True)
            systems: dict[str, Any] = {}
            for name in args.systems:
                if name == "evidence":
                    systems[name] = EvidenceOracle(conv, args.keep_names)
                elif name == "memory":
                    systems[name] = MemoryRecall(conv, bot.memories, settings, tuple(args.kinds))
                else:
                    systems[name] = TurnBaseline(conv, embedder, hybrid=name == "turns-hybrid")
            await evaluate(conv, systems, set(args.answer), CachedModel(bot.model, cache, model_id),  # type: ignore[arg-type]
                           args.k, args.answer_k, scores, details, args.keep_names, args.answer_questions)
    cache.close()
    result["questions"] = len(details)
    result["ingestion"] = ingestion
    totals = {key: round(sum(row.get(key, 0) for row in ingestion.values()), 1)
              for key in ["turns", "facts_extracted", "facts_stored", "passages_stored", "extraction_s", "store_s",
                          "facts_current"]}
    totals["extraction_s_per_turn"] = round(totals["extraction_s"] / max(1, totals["turns"]), 2)
    result["ingestion_total"] = totals
    result["systems"] = {name: summarize(scores[name], args.k) for name in args.systems}
    result["per_conversation"] = per_conversation(details, args.systems, args.k)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"), 10 if 10 in args.k else args.k[0])
    detail_path = args.data_dir / f"details-{args.out.stem}.json"
    detail_path.write_text(json.dumps(details, indent=1, default=str))
    print(json.dumps(result["systems"], indent=2))
    print(f"wrote {args.out}, {args.out.with_suffix('.png')} and {detail_path} (per question; quotes the data set)")


if __name__ == "__main__":
    asyncio.run(main())
