"""Training speed of ``vidnoise train`` on a busy machine: threading defaults side by side.

Runs ``python -m vidnoise train --steps N`` (default sizes) in subprocesses, interleaved,
under two conditions: as the machine is, and with one extra competing busy process (a
Python spin loop) for the whole measurement. Configurations:

* ``new default``: this checkout's command line (passive OpenMP waiting, threads = cores);
* ``new, OMP_NUM_THREADS=1``: the same with one thread (the floor the default must match);
* ``old default``: the command line of a reference commit (``--old-src``: a ``src`` folder,
  e.g. ``git archive <commit> src | tar -x -C /tmp/old``), torch's default threads and
  OpenMP's default (spinning) wait policy.

The time is the training time each run reports (``trained N steps in X s``: no start-up).
Prints medians over the repeats and the ratios; numbers go to docs/performance.md.

    python benchmarks/bench_cli_threads.py --old-src /tmp/old/src --repeats 3
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def run_once(src: str, env_extra: dict, steps: int, out: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",
                                                           "OMP_WAIT_POLICY")}
    env.update(PYTHONPATH=src, **env_extra)
    p = subprocess.run([sys.executable, "-m", "vidnoise", "train", "--steps", str(steps),
                        "--out", out, "--no-progress"], env=env, capture_output=True,
                       text=True, timeout=1200)
    m = re.search(r"trained \d+ steps in ([0-9.]+) s", p.stderr)
    if p.returncode != 0 or m is None:
        raise RuntimeError(p.stderr[-2000:])
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-src", default=None, help="src folder of the reference commit")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    configs = {"new default": (SRC, {}), "new, OMP_NUM_THREADS=1": (SRC, {"OMP_NUM_THREADS": "1"})}
    if a.old_src:
        configs["old default"] = (a.old_src, {})
    print(f"cores available: {len(os.sched_getaffinity(0))}, load average: "
          f"{os.getloadavg()[0]:.1f}, steps per run: {a.steps}, repeats: {a.repeats}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for condition in ("as is", "+1 busy process"):
            spin = None
            if condition != "as is":
                spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                times = {name: [] for name in configs}
                for r in range(a.repeats):
                    for name, (src, extra) in configs.items():
                        out = os.path.join(tmp, f"{len(results)}-{r}-{len(times[name])}")
                        times[name].append(run_once(src, extra, a.steps, out))
                results[condition] = times
            finally:
                if spin is not None:
                    spin.kill()
                    spin.wait()
            load = os.getloadavg()[0]
            print(f"\n{condition} (load average after: {load:.1f})")
            one = statistics.median(times["new, OMP_NUM_THREADS=1"])
            for name, ts in times.items():
                med = statistics.median(ts)
                print(f"  {name:26s} median {med:6.2f} s  speed vs 1 thread {one / med:5.2f}x"
                      f"  runs {', '.join(f'{t:.2f}' for t in ts)}")


if __name__ == "__main__":
    main()
