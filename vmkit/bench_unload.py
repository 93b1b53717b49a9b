"""`./kit bench`, the unload's figures: 100 load/unload cycles in one machine.

Each cycle is the COS's own `insmod` then `rmmod` of the load-call module, then
a `ticks` command to see the COS answer at CPL 0. The COS's fingerprint
(lessons/unload.py) is compared with the one taken before the first load after
every cycle; the Python process's resident memory is read from /proc at the
start and every 25 cycles (the board's trace keeps every event, so some growth
per cycle is the record, not a leak: its event count is printed beside it).
"""
import gc
import os
import time

from vmkit.hw.board import Board
from vmkit.cos.cos import COS
from vmkit.lessons.unload import differences, fingerprint
from vmkit.loader import Loader

LIMIT = 3_000_000


def rss_mib():
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def cycles(n=100, cpus=1, every=25):
    """[(cycle, MiB resident, trace events, seconds)], and the cycles whose fingerprint differed."""
    board = Board(cpus=cpus)
    cos = COS.boot(board)
    loader = Loader(board)
    cos.put_module(loader.module)
    before = fingerprint(board)
    gc.collect()
    rows, differed = [(0, rss_mib(), len(board.trace.events), 0.0)], []
    t = time.perf_counter()
    for cycle in range(1, n + 1):
        ok = "insmod: ok" in cos.run_command("insmod", LIMIT)
        ok = ok and "rmmod: ok" in cos.run_command("rmmod", LIMIT)
        ok = ok and "cos: ticks" in cos.run_command("ticks", LIMIT)
        after = fingerprint(board)
        if not ok or after != before:
            differed.append((cycle, differences(before, after, board)[:5] or ["a command failed"]))
        if cycle % every == 0:
            gc.collect()
            rows.append((cycle, rss_mib(), len(board.trace.events), time.perf_counter() - t))
    return rows, differed


def main(n=100):
    for cpus in (1, 2):
        rows, differed = cycles(n, cpus)
        print(f"{n} load/unload cycles, {cpus} CPU{'s' if cpus > 1 else ''}: "
              f"{'fingerprint identical after every cycle' if not differed else f'{len(differed)} differed: {differed[0]}'}")
        for cycle, mib, events, seconds in rows:
            print(f"  after {cycle:3} cycles: {mib:6.1f} MiB resident, {events:7,} trace events, {seconds:5.1f} s")


if __name__ == "__main__":
    main()
