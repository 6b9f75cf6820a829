"""The reliability suite at its full counts (issue 17): crash points, isolation, hostile input, outages, logs, load.

    .venv/bin/python bench/reliability.py [--sample] [--only crash_points,isolation,...]
        [--kill-points N] [--out bench/results/reliability.json]

Each section lives in tests/reliability/ (one module per section, its cases and a `run` function); CI runs the
same functions with `full=False` (tests/reliability/test_*.py). This runs them with `full=True` (or `--sample`:
the CI sample, for a quick look), prints one table per section (cases tried, violations) and writes them as JSON,
with the load section's resident memory over time as a PNG beside it. Section 5 (logs and secrets) is the sum of
every section's scan of its own logs at LOG_LEVEL=DEBUG. Peak resident memory of this process and of the
processes it started is reported too. Exits non-zero if any violation was found.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.reliability.tally import Table  # noqa: E402
from tests.servers.postgres import postgres_server  # noqa: E402

# (module in tests/reliability, the section's title) in the order; logs are section 5
SECTIONS = (
    ("crash_points", "1. Crash points"),
    ("isolation", "2. Isolation"),
    ("hostile_slack", "3a. Hostile input, Slack"),
    ("hostile_discord", "3b. Hostile input, Discord"),
    ("outages", "4. Outages"),
    ("load", "6. Load"),
)


def plot_rss(tables: list[Table], path: Path) -> bool:
    """Resident memory over time during the load section (its `data["rss"]`: {platform: [[s, MB], ...]})."""
    series = next((t.data["rss"] for t in tables if "rss" in t.data), None)
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in series.items():
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=name)
    ax.set_xlabel("seconds since the section started")
    ax.set_ylabel("resident memory (MB)")
    ax.set_title("Load: 50 users x 20 messages, resident memory of the bot's process")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory (ru_maxrss, KiB on Linux) of this process and of the largest child it waited for."""
    return {"self_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


async def run_sections(names: list[str], full: bool, workdir: Path,
                       kill_points: int | None) -> tuple[list[Table], Table, dict[str, float]]:
    tables: list[Table] = []
    logs = Table("5. Logs and secrets")
    seconds: dict[str, float] = {}
    with postgres_server() as postgres:
        for module_name, title in SECTIONS:
            if module_name not in names:
                continue
            module = importlib.import_module(f"tests.reliability.{module_name}")
            print(f"running {title} ({'full' if full else 'sample'})...", flush=True)
            started = time.monotonic()
            section_dir = workdir / module_name
            section_dir.mkdir()
            extra = {"limit": kill_points, "progress": print} if module_name == "crash_points" else {}
            table, log_table = await module.run(section_dir, full=full, postgres=postgres, **extra)
            seconds[module_name] = round(time.monotonic() - started, 1)
            table.section = title
            tables.append(table)
            for row in log_table.rows.values():  # one row per section and kind of log
                logs.add(f"{title}: {row.case}", row.tried, row.violations)
            print(table.markdown(), flush=True)
    return tables, logs, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", action="store_true", help="the CI sample instead of the full counts")
    parser.add_argument("--only", default=",".join(name for name, _ in SECTIONS),
                        help="comma-separated sections to run (module names in tests/reliability)")
    parser.add_argument("--kill-points", type=int, default=None,
                        help="crash points: at most this many kill points per store (each step is killed at "
                             "least once before any is killed twice); default all")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "reliability.json")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - {name for name, _ in SECTIONS}
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="memorybot-reliability-") as tmp:
        tables, logs, seconds = asyncio.run(run_sections(names, not args.sample, Path(tmp), args.kill_points))
    # section 5 (logs) goes before 6 (load)
    every = [t for t in tables if t.section < "5"] + [logs] + [t for t in tables if t.section >= "5"]
    print()
    for table in every:
        print(table.markdown(), "\n")
    violations = sum(len(t.violations) for t in every)
    result: dict[str, Any] = {
        "full": not args.sample,
        "sections": [t.to_json() for t in every],
        "violations": violations,
        "seconds": {**seconds, "total": round(time.monotonic() - started, 1)},
        "peak_rss": peak_rss_mb(),
        "machine": {"cpu": cpu_name(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if plot_rss(tables, args.out.with_suffix(".png")):
        print(f"wrote {args.out.with_suffix('.png')}")
    print(f"violations: {violations}; peak RSS {result['peak_rss']}")
    for table in every:
        for violation in table.violations[:10]:
            print(f"  {table.section}: {violation}")
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
