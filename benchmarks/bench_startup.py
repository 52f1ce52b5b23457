"""Start-up time of the `attnscope` command: wall time of a fresh process for each command line.

    python benchmarks/bench_startup.py [--rounds 5] [--json]

Each round runs every command once, in turn (interleaved, so a busy spell of the machine hits all of
them alike), each in a fresh subprocess through the installed console script. `python -c pass` is the
floor (the interpreter's own start). Reported: the median and the range over the rounds, and whether
each command imported torch (it must not).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "attnscope --help": ["attnscope", "--help"],
    "attnscope --version": ["attnscope", "--version"],
    "attnscope analyze --help": ["attnscope", "analyze", "--help"],
}
PROBE = ("import sys\nfrom attnscope.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
         "print('torch' in sys.modules, file=sys.stderr)")


def time_once(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def imports_torch(argv: list[str]) -> bool | None:
    if argv[0] != "attnscope":
        return None
    r = subprocess.run([sys.executable, "-c", PROBE, *argv[1:]], capture_output=True, text=True, check=True)
    return r.stderr.strip().splitlines()[-1] == "True"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    if shutil.which("attnscope") is None:
        sys.exit("the attnscope console script is not on PATH: pip install -e .")
    for argv in COMMANDS.values():  # warm the file cache once, untimed
        time_once(argv)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(max(3, args.rounds)):
        for name, argv in COMMANDS.items():
            times[name].append(time_once(argv))
    rows = {name: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v),
                   "imports_torch": imports_torch(COMMANDS[name])} for name, v in times.items()}
    info = {"rounds": max(3, args.rounds), "load_average_1min": os.getloadavg()[0], "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps({"info": info, "commands": rows}, indent=1))
        return
    print(f"{info['rounds']} rounds, {info['cpus']} CPUs, 1-min load average {info['load_average_1min']:.1f}")
    print(f"{'command':28s} {'median':>8s} {'range':>15s}  torch imported")
    for name, r in rows.items():
        torch_col = "-" if r["imports_torch"] is None else ("yes" if r["imports_torch"] else "no")
        print(f"{name:28s} {r['median_s']:7.2f}s {r['min_s']:6.2f}–{r['max_s']:.2f} s  {torch_col}")


if __name__ == "__main__":
    main()
