"""Run ``curridistill`` and SIGKILL this very process at a chosen moment, as a crash or `kill -9` would.

    python -m tests.trust.fault_driver write PATTERN N -- ARGV...    # inside the Nth atomic write of a file
                                                                   # named PATTERN, with half the temp file written
    python -m tests.trust.fault_driver record N -- ARGV...           # right after the Nth metrics.jsonl record
"""
from __future__ import annotations

import fnmatch
import os
import signal
import sys
from pathlib import Path


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    sep = argv.index("--")
    spec, cli_argv = argv[:sep], argv[sep + 1:]
    if spec[0] == "write":
        from curridistill import io as cio

        pattern, n, original, count = spec[1], int(spec[2]), cio.atomic_write, [0]

        def atomic_write(path, write):
            if fnmatch.fnmatch(Path(path).name, pattern):
                count[0] += 1
                if count[0] == n:
                    def half_then_die(tmp):
                        write(tmp)
                        size = os.path.getsize(tmp)
                        with open(tmp, "r+b") as f:
                            f.truncate(size // 2)
                        _die()
                    return original(path, half_then_die)
            return original(path, write)

        cio.atomic_write = atomic_write
    elif spec[0] == "record":
        from curridistill.train.metrics_log import MetricsLog

        n, original, count = int(spec[1]), MetricsLog.append, [0]

        def append(self, record):
            original(self, record)
            count[0] += 1
            if count[0] == n:
                _die()

        MetricsLog.append = append
    from curridistill import cli

    return cli.main(cli_argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
