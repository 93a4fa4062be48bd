"""``python -m parent_proxy.writers_bench``: two processes writing one SQLite state, with and without the writer lock.

Each of two processes (as two ``WAIAAS_WORKERS`` would) opens its own `SqliteStore` on one database file and, for
``--seconds``, records a request (one durable write transaction, `Store.record_request`) and then spins for
``--work-us`` microseconds of CPU, as the rest of a request would. The time of each write call is sampled. Two rounds
in the same run: the baseline without the writer lock (`sqlite_writer_lock.acquire` and ``release`` replaced by
nothing in both processes: a writer that finds the other one writing waits in SQLite's busy handler, as before the
lock), then the store as it is. The last line printed is exactly:

    sqlite-writers p50_ms=<...> p99_ms=<...> baseline_p50_ms=<...> baseline_p99_ms=<...> ratio_p99=<...>

(``ratio_p99``: the store's p99 over the baseline's; below 1 is better).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from parent_proxy.bench import percentile
from parent_proxy.store import sqlite_writer_lock
from parent_proxy.store.model import Wallet
from parent_proxy.store.sqlite import SqliteStore

WALLET_ID = "bench-writers"
PROCESSES = 2


def _nothing(*_args: object, **_kwargs: object) -> None:
    return None


def _writer(
    database: str, seconds: float, work_us: float, *, lock: bool, start: Barrier, out: Queue[list[float]]
) -> None:
    if not lock:  # the baseline: SQLite's busy handler alone
        sqlite_writer_lock.acquire = _nothing
        sqlite_writer_lock.release = _nothing
    store = SqliteStore(database)
    latencies: list[float] = []
    start.wait()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        began = time.perf_counter()
        store.record_request(WALLET_ID, time.time())
        latencies.append(time.perf_counter() - began)
        spin_until = time.perf_counter() + work_us / 1e6
        while time.perf_counter() < spin_until:
            pass
    store.close()
    out.put(latencies)


def run(directory: Path, *, lock: bool, seconds: float, work_us: float) -> list[float]:
    database = str(directory / ("locked.db" if lock else "baseline.db"))
    store = SqliteStore(database)
    store.create_wallet(  # a record only: no key behind these bytes
        Wallet(WALLET_ID, agent_pubkey=b"\x01" * 32, owner_pubkey=b"\x02" * 32, vault_address=b"\x03" * 32,
               sealed_key=b"not a sealed key")
    )  # fmt: skip
    store.close()
    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(PROCESSES), context.Queue()
    workers = [
        context.Process(
            target=_writer, args=(database, seconds, work_us), kwargs={"lock": lock, "start": start, "out": out}
        )
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    latencies: list[float] = []
    for _ in workers:
        latencies += out.get(timeout=seconds + 60)
    for worker in workers:
        worker.join(timeout=30)
    return latencies


def _line(name: str, latencies: list[float], seconds: float) -> str:
    return (
        f"{name}: writes={len(latencies)} per_second={len(latencies) / seconds:.0f} "
        f"p50_ms={percentile(latencies, 0.5) * 1000:.3f} p99_ms={percentile(latencies, 0.99) * 1000:.3f} "
        f"max_ms={max(latencies) * 1000:.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parent_proxy.writers_bench")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--work-us", type=float, default=400.0, help="CPU spent between two writes of a process")
    parser.add_argument("--state-dir", type=Path, help="where the databases go (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.work_us < 0:
        parser.error("--seconds must be positive and --work-us not negative")
    with tempfile.TemporaryDirectory(prefix="waiaas-writers-", dir=args.state_dir) as tmp:
        baseline = run(Path(tmp), lock=False, seconds=args.seconds, work_us=args.work_us)
        locked = run(Path(tmp), lock=True, seconds=args.seconds, work_us=args.work_us)
    print(_line("busy handler (baseline)", baseline, args.seconds))
    print(_line("writer lock", locked, args.seconds))
    p99, base_p99 = percentile(locked, 0.99), percentile(baseline, 0.99)
    print(
        f"sqlite-writers p50_ms={percentile(locked, 0.5) * 1000:.3f} p99_ms={p99 * 1000:.3f} "
        f"baseline_p50_ms={percentile(baseline, 0.5) * 1000:.3f} baseline_p99_ms={base_p99 * 1000:.3f} "
        f"ratio_p99={p99 / base_p99:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
