"""Stopping the bot processes a test or benchmark started: SIGTERM (the clean shutdown path of
adapters/platform.py) to every one still running, then a wait, then SIGKILL for one that did not stop."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterable


def stop_all(processes: Iterable[subprocess.Popen], timeout: float = 30.0) -> None:
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
