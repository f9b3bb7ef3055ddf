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


def cpu_jiffies() -> tuple[int, int] | None:
    """``(stolen, total)`` CPU time of the whole machine since boot, in clock ticks (the ``cpu``
    line of /proc/stat), or None where there is none. On a virtual machine ``stolen`` counts the
    time the host ran other guests while this one was ready to run: a run during which it grows
    is slowed down by as much, whatever its own code does."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return ticks[7], sum(ticks)


def steal_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Per cent of the machine's CPU time stolen between two :func:`cpu_jiffies` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


def run_meta(module: str, argv: list[str] | None, threads: int) -> dict:
    """The header of a benchmark's results: the command that produced them (``python -m
    module`` with ``argv``, default the process's own), the machine and the date."""
    import sys
    import time

    args = sys.argv[1:] if argv is None else argv
    return {
        "command": f"python -m {module} " + " ".join(args),
        "machine": {"cpu": cpu_model(), "memory": memory_total(), "threads": threads},
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
