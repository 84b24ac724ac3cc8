"""Masking time over growing lines, and what a 100 MB line costs the shell, as figures.

* masking: median and max of repeated ``mask_line`` runs per line shape and length, and the time per
  character (linear masking keeps it flat as the line grows; the masker before issue 11 took 6.3 s
  for a 220 kB line);
* a 100 MiB line on standard input of a batch: wall time, the shell's peak RSS (target: under 100 MB),
  and the size of the audit record it leaves.

Usage: .venv/bin/python bench/input_bounds.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.masking import mask_line

BIN = Path(sys.executable).parent
SECRETS = {"db_pass"}
FLAGS = {"db_pass", "db_host", "db_user", "yes"}
SHAPES = {
    "quoted secrets": "--db_pass 'a b' ",
    "misspelt flags": "--db_pas x ",
    "escapes": "a\\ b\\ c ",
    "open quote": '"x ',
}
SIZES = (4_096, 65_536, 262_144, 1_048_576)
MiB = 1 << 20


def masking(runs: int) -> None:
    print(f"masking, {runs} runs each: median / max, and median per character")
    for name, unit in SHAPES.items():
        for size in SIZES:
            line = unit * (size // len(unit))
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                mask_line(line, SECRETS, FLAGS)
                times.append(time.perf_counter() - t0)
            median = statistics.median(times)
            print(f"  {name:<15} {size:>9} chars  median {median * 1000:8.2f} ms  max {max(times) * 1000:8.2f} ms"
                  f"  {median / len(line) * 1e9:6.0f} ns/char")


def hundred_mb_line() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = root / "appliance.toml"
        config.write_text(f'[paths]\nstate_dir = "{root / "state"}"\n[hostname]\nbackend = "file"\n'
                          '[audit]\ntarget = "file"\n')
        probe = ("import resource, subprocess, sys\n"
                 "done = subprocess.run(sys.argv[1:])\n"
                 "sys.stderr.write('MAXRSS=%d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", probe, str(BIN / "appliance-shell"), "--config", str(config)],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(b"redirect --db_pass SEKRIT ")
        for _ in range(100):
            proc.stdin.write(b"A" * MiB)
        proc.stdin.write(b"\n")
        proc.stdin.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=300)
        took = time.perf_counter() - t0
        rss_kib = int(err.rsplit("MAXRSS=", 1)[1])
        record = json.loads((root / "state" / "audit.log").read_text().splitlines()[0])
        audit_bytes = (root / "state" / "audit.log").stat().st_size
    print(f"100 MiB line in a batch: {took:.2f} s, peak RSS {rss_kib / 1024:.1f} MiB (target < 100 MB), "
          f"audit record {audit_bytes} bytes (length={record['length']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    masking(args.runs)
    hundred_mb_line()


if __name__ == "__main__":
    main()
