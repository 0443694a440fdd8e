"""CPU time and memory of process trees, read from /proc (Linux only)."""

import os
import threading
from dataclasses import dataclass

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class ProcStat:
    pid: int
    ppid: int
    # One letter of proc(5): R running, S sleeping, Z zombie and so on.
    state: str
    # utime + stime + cutime + cstime, in clock ticks. cutime and cstime hold the time of
    # children that the process has reaped, so exited workers and backends still count.
    cpu_ticks: int
    rss_bytes: int


def read_stat(pid: int) -> ProcStat | None:
    """Read one process's /proc/PID/stat, or None when it has exited."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            text = file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None

    # The command name in field 2 may contain spaces and brackets, so split after its last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5): ppid is field 4, utime to cstime are 14 to 17,
    # rss (in pages) is 24.
    state = fields[0]
    ppid = int(fields[1])
    cpu_ticks = sum(int(value) for value in fields[11:15])
    rss_bytes = int(fields[21]) * PAGE_SIZE
    return ProcStat(pid, ppid, state, cpu_ticks, rss_bytes)


def user_system_seconds(pid: int) -> tuple[float, float]:
    """Return one process's own user and system CPU seconds (utime and stime of proc(5))."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
        text = file.read()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) / CLOCK_TICKS_PER_SECOND, int(fields[12]) / CLOCK_TICKS_PER_SECOND


def is_alive(pid: int) -> bool:
    """Return whether a process exists and is not a zombie."""
    stat = read_stat(pid)
    return stat is not None and stat.state != "Z"


def read_all() -> dict[int, ProcStat]:
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None:
                stats[stat.pid] = stat
    return stats


def tree(root: int, stats: dict[int, ProcStat] | None = None) -> list[ProcStat]:
    """Return the root process and all its descendants that are alive now."""
    if stats is None:
        stats = read_all()
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)

    found = []
    pending = [root]
    while pending:
        pid = pending.pop()
        if pid in stats:
            found.append(stats[pid])
            pending.extend(children.get(pid, []))
    return found


def tree_pids(root: int) -> list[int]:
    return [stat.pid for stat in tree(root)]


def tree_cpu_seconds(root: int) -> float:
    """Return the CPU time (user and system) of a process tree, reaped children included."""
    return sum(stat.cpu_ticks for stat in tree(root)) / CLOCK_TICKS_PER_SECOND


def tree_rss_bytes(root: int) -> int:
    """Return the summed resident set size of a process tree. Pages shared between forked
    workers count once per process, as in `ps`."""
    return sum(stat.rss_bytes for stat in tree(root))


class PeakRssSampler:
    """Samples a process tree's summed RSS on a background thread and keeps the maximum."""

    def __init__(self, root: int, interval_seconds: float = 0.1):
        self.root = root
        self.interval_seconds = interval_seconds
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, tree_rss_bytes(self.root))
            self._stop.wait(self.interval_seconds)

    def __enter__(self) -> "PeakRssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
