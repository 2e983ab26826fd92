"""How the paired t-test over shared seeds compares with the tables' Welch test, over accuracy-table JSONs.

    python benchmarks/paired_vs_welch.py benchmarks/results/accuracy_*.json

Counts the distinct comparisons (each row against the student alone and against kd; kd vs alone once), how
often the paired p-value is the smaller, and lists those whose two p-values fall on either side of 0.05. The
JSONs carry both (``p_vs_*`` Welch, ``paired_p_vs_*``; ``accuracy_table.py --render`` adds the paired ones).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def comparisons(record: dict) -> list[tuple[str, str, float, float]]:
    """(row, reference, Welch p, paired p) for each distinct comparison of one table."""
    seen, out = set(), []
    for row in record["rows"]:
        for ref, name in (("alone", "student alone"), ("kd", "kd")):
            welch, paired = row.get(f"p_vs_{ref}"), row.get(f"paired_p_vs_{ref}")
            pair = frozenset((row["method"], name))
            if welch is None or paired is None or pair in seen:
                continue
            seen.add(pair)
            out.append((row["method"], name, welch, paired))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", nargs="+", help="accuracy-table JSON files")
    args = p.parse_args(argv)
    total = smaller = 0
    crossing = []
    for path in args.json:
        for row, ref, welch, paired in comparisons(json.loads(Path(path).read_text())):
            total += 1
            smaller += paired < welch
            if (welch < 0.05) != (paired < 0.05):
                crossing.append(f"{Path(path).name}: {row} vs {ref}: Welch {welch:.3g}, paired {paired:.3g}")
    print(f"{total} comparisons; paired p smaller in {smaller}; {len(crossing)} on either side of 0.05")
    print("\n".join(crossing))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
