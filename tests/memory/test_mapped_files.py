"""Releasing a weights file's resident pages: the resident size drops, what the mapping reads does not change."""

from __future__ import annotations

import mmap
import re
import sys
from pathlib import Path

import pytest

from memory.mapped_files import release_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
PAGE = mmap.PAGESIZE


def resident_bytes(path: Path) -> int:
    """The resident size of this process's mappings of `path`, from /proc/self/smaps."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):  # a mapping's first line: address perms offset dev inode path
            inside = line.split(maxsplit=5)[5:] == [str(path.resolve())]
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total


def test_a_read_only_mapping_gives_back_its_pages_and_reads_the_same(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    data = bytes(range(256)) * (64 * PAGE // 256)
    weights.write_bytes(data)
    with weights.open("rb") as file:
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)  # shared, read-only: how OpenVINO maps
        try:
            view = memoryview(mapped)
            assert bytes(view) == data  # every page read: resident
            assert resident_bytes(weights) == len(data)
            assert release_pages(weights) == len(data)
            assert resident_bytes(weights) == 0
            assert bytes(view) == data  # read again from the file's pages
            view.release()
        finally:
            mapped.close()


def test_a_writable_mapping_is_left_alone(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0" * 16 * PAGE)
    with weights.open("r+b") as file:
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)  # private and writable: changes live here
        try:
            mapped[:5] = b"hello"
            assert release_pages(weights) == 0
            assert mapped[:5] == b"hello"
        finally:
            mapped.close()
