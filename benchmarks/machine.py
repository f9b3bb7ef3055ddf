"""What machine a benchmark ran on (Linux /proc readings), for the result tables."""

from __future__ import annotations

from pathlib import Path


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or ``unknown``."""
    return _proc_field("/proc/cpuinfo", "model name") or "unknown"


def memory_total() -> str:
    """Total memory from /proc/meminfo in GiB, or ``unknown``."""
    value = _proc_field("/proc/meminfo", "MemTotal")
    try:
        return f"{int(value.split()[0]) / 2**20:.1f} GiB" if value else "unknown"
    except ValueError:
        return "unknown"
