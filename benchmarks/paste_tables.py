"""Paste the benchmark tables into the README, verbatim, where it marks them.

    python benchmarks/paste_tables.py

A table that a long benchmark rewrites after every row (benchmarks/results/*.md) sits in README.md between
`<!-- table: NAME.md -->` and `<!-- /table -->`; this replaces each such block with the file as written,
so the README never shows a number that no recorded command produced (tests/bench/test_readme_tables.py
checks the same thing). Tables without markers are pasted by hand.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w.\-/]+\.md) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def paste(readme: str, results: Path) -> tuple[str, list[str]]:
    """The README with every marked block replaced by its table; the names of the tables pasted."""
    pasted = []

    def replace(match: re.Match) -> str:
        table = results / match["name"]
        if not table.is_file():
            raise SystemExit(f"error: README.md marks {match['name']}, but {table} does not exist; "
                             f"run its benchmark or remove the marker")
        pasted.append(match["name"])
        return match[1] + table.read_text().strip() + "\n" + match[4]

    return BLOCK.sub(replace, readme), pasted


def main() -> int:
    readme_path = REPO / "README.md"
    text, pasted = paste(readme_path.read_text(), REPO / "benchmarks" / "results")
    readme_path.write_text(text)
    print("pasted: " + (", ".join(pasted) or "nothing (no <!-- table: NAME.md --> markers)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
