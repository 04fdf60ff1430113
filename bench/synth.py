"""Benchmark: clips per second of the built-in synthesiser (``musicdistill data synth``).

Writes ``--clips`` clips of ``--duration`` s at ``--sample-rate`` Hz into a temporary folder with
each worker count in ``--workers`` and reports wall-clock clips per second (what a user waits for:
worker start-up, writing and the final manifest included) and the CPU milliseconds per clip spent
by this process and its workers together. On a shared machine the CPU figure is the steadier one:
on an idle box, W workers approach W * 1000 / cpu_ms clips per second. Also reports the CPU cost of
rendering alone in this process. Target: >= 100 clips/s of 4 s with 2 workers (floor 20/s).

    .venv/bin/python bench/synth.py                      # 800 clips, 1 and 2 workers
    .venv/bin/python bench/synth.py --clips 8000 --workers 2
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

from musicdistill.data.synth import synth_record, synthesize_dataset


def render_cpu_ms(clips: int, sample_rate: int, duration: float) -> float:
    """CPU milliseconds per clip to draw attributes and caption and render the audio, in this process."""
    synth_record(0, 0, sample_rate, duration)  # warm-up
    start = time.process_time()
    for index in range(clips):
        synth_record(0, index, sample_rate, duration)
    return 1000 * (time.process_time() - start) / clips


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def dataset_rate(clips: int, workers: int, sample_rate: int, duration: float) -> tuple[float, float]:
    """(wall-clock clips per second, CPU ms per clip) of ``synthesize_dataset`` into a fresh folder."""
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as out:
        start, cpu = time.perf_counter(), _cpu_seconds()
        synthesize_dataset(out, clips, seed=0, sample_rate=sample_rate, duration=duration, workers=workers)
        wall = time.perf_counter() - start
        return clips / wall, 1000 * (_cpu_seconds() - cpu) / clips


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=800, help="clips per dataset run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args()
    print(f"cpus={os.cpu_count()} load average={os.getloadavg()[0]:.1f}")
    cpu_ms = render_cpu_ms(min(args.clips, 200), args.sample_rate, args.duration)
    print(f"render: {cpu_ms:.1f} CPU ms per clip ({1000 / cpu_ms:.0f} clips/s per idle core)")
    for workers in args.workers:
        rate, cpu_ms = dataset_rate(args.clips, workers, args.sample_rate, args.duration)
        print(
            f"synthesize_dataset: {args.clips} clips, {workers} workers: {rate:.1f} clips/s wall, "
            f"{cpu_ms:.1f} CPU ms per clip (idle-box estimate {workers * 1000 / cpu_ms:.0f} clips/s)"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
