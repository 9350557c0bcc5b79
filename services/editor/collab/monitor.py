"""Per-process health numbers: event-loop lag, resident memory and CPU time."""

from __future__ import annotations

import asyncio
import os
import resource

from collab import metrics

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


async def watch_process(interval: float = 1.0) -> None:
    """Sample forever; a timer that fires late measures how busy the loop was."""
    loop = asyncio.get_running_loop()
    counted_cpu = 0.0
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        metrics.EVENT_LOOP_LAG.observe(max(0.0, loop.time() - started - interval))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        metrics.CPU_SECONDS.inc(cpu - counted_cpu)
        counted_cpu = cpu
        metrics.RESIDENT_MEMORY.set(_resident_bytes())
