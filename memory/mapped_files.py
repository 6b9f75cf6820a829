"""Handing back the resident pages of a weights file that a compiled OpenVINO model no longer reads.

OpenVINO maps a model's weights file (shared, read-only) and its CPU plugin copies the weights into its own layout
while compiling. The mapping stays, since a few constants are read in place (the embedding rows a prompt looks
up), and so does every page the compiler read: resident, and counted in the process's RSS (about 300 MB for the
bundled 0.5B model, 85 MB for the embedder) though never read again. `release_pages` tells the kernel that this
process does not need them now (`madvise(MADV_DONTNEED)`): a page read later is mapped again from the page cache or
the file, so nothing changes but the resident size. Only shared read-only mappings are advised, where dropping a
page can never drop data. Linux only (it reads /proc/self/maps); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
from pathlib import Path

_log = logging.getLogger(__name__)

MAPS = Path("/proc/self/maps")


def release_pages(path: Path) -> int:
    """Drop this process's resident pages of the shared read-only mappings of `path`; returns the bytes advised."""
    advice = getattr(mmap, "MADV_DONTNEED", None)
    try:
        lines = MAPS.read_text().splitlines()
    except OSError:
        return 0
    if advice is None:
        return 0
    target, advised = str(path.resolve()), 0
    libc = ctypes.CDLL(None, use_errno=True)
    for line in lines:
        fields = line.split(maxsplit=5)  # address perms offset dev inode path
        if len(fields) < 6 or fields[5] != target or fields[1] != "r--s":
            continue
        start, end = (int(address, 16) for address in fields[0].split("-"))
        if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), advice) == 0:
            advised += end - start
        else:
            _log.debug("madvise of a mapping of %s failed (errno %d)", path.name, ctypes.get_errno())
    return advised
