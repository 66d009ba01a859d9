"""CPU time of a process and all its descendants (Linux ``/proc``), to show who is busy.

On loopback the uploader and the servers share the machine's cores, so an ingest rate alone
does not say whether the server was CPU-bound; the server's CPU seconds per report do.
Elsewhere than Linux every reading is None.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def _stat(pid_dir: Path) -> tuple[int, int, float] | None:
    """(pid, parent pid, user + system CPU seconds) of one /proc entry."""
    try:
        text = (pid_dir / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after the last ")".
    fields = text[text.rindex(")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return int(pid_dir.name), int(fields[1]), ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float | None:
    """User + system CPU seconds used so far by ``root`` and every descendant alive now."""
    if not _PROC.is_dir():
        return None
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(entry)
        if stat is None:
            continue
        pid, parent, seconds = stat
        children.setdefault(parent, []).append(pid)
        cpu[pid] = seconds
    if root not in cpu:
        return None
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0.0)
        stack.extend(children.get(pid, ()))
    return total
