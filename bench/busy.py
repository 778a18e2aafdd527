"""Keep CPU cores busy while a benchmark runs: the machine of a user who has other work open.

`busy_cores(n)` starts n processes that each spin on one core (a Python loop, no memory
traffic) and stops them on exit. Benchmarks use it for their `--busy N` option, to measure
each framework's slowdown when a core is taken:

    from busy import busy_cores
    with busy_cores(1):
        ...measure...

Run alone, it keeps N cores busy until interrupted (for trying a command by hand):

    python bench/busy.py 1
"""
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

SPIN = "while True: pass"


@contextmanager
def busy_cores(count):
    """Run `count` spinning processes for the duration of the block (none when count is 0)."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]
    try:
        if spinners:
            time.sleep(0.5)   # let them start and take their cores before anything is timed
        yield spinners
    finally:
        for spinner in spinners:
            spinner.terminate()
        for spinner in spinners:
            spinner.wait()


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # `kill PID` stops the spinners too
    with busy_cores(count):
        print(f"{count} core(s) busy; Ctrl-C stops", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
