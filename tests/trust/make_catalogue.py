"""Write docs/bad_inputs.md from the catalogue, with the message each case really gets.

    OMP_NUM_THREADS=1 .venv/bin/python -m tests.trust.make_catalogue
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

from tests.helpers import REPO
from tests.trust.catalogue import CASES, normalize

AREAS = {"config": "Config files", "models": "Names: models, knowledge terms, schedules, pacings, scorers",
         "data": "Data", "numerical": "Numerical ranges", "checkpoints": "Checkpoints (data, never code)",
         "predict": "Inputs of predict and eval", "cli": "Command line and run directories"}

HEADER = """# Bad inputs and what they get

Every entry below is a test (`tests/trust/test_bad_inputs.py`): the input is built, run through
`curridistill` in-process, and must end with exit code 2 and exactly this one line on stderr (after
`error: `), before any training starts, with no traceback. `<tmp>` stands for the test's temporary
directory. Regenerate this file after changing a message:
`OMP_NUM_THREADS=1 .venv/bin/python -m tests.trust.make_catalogue`.

Checks that need the data (a dry build of every model with one forward pass, feature-tap paths, adapter
shapes, batch size against the data) run in `validate` and at the start of `run`; `validate --static`
skips them.
"""


class _Cap:
    def __init__(self):
        self.out, self.err = io.StringIO(), io.StringIO()

    def readouterr(self):
        out, err = self.out.getvalue(), self.err.getvalue()
        self.out.seek(0), self.out.truncate(), self.err.seek(0), self.err.truncate()
        return out, err


def main() -> int:
    from curridistill import cli

    rows: dict[str, list[str]] = {a: [] for a in AREAS}
    failures = 0
    for case in CASES:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            cwd = os.getcwd()
            os.chdir(tmp)
            cap = _Cap()
            try:
                with contextlib.redirect_stdout(cap.out), contextlib.redirect_stderr(cap.err):
                    try:
                        code = cli.main(case.make(tmp))
                    except SystemExit as exc:
                        code = exc.code
            finally:
                os.chdir(cwd)
            err = cap.err.getvalue().strip().splitlines()
            line = err[-1].removeprefix("error: ") if err else "(no message)"
            if code != 2 or len(err) != 1 or case.expect not in line:
                failures += 1
                print(f"FAIL {case.id}: exit {code}: {cap.err.getvalue()}", file=sys.stderr)
            msg = normalize(line, tmp).replace("|", "\\|")
            code_span = f"`` {msg} ``" if "`" in msg else f"`{msg}`"
            rows[case.area].append(f"| {case.id} | {case.what} | {code_span} |")
    parts = [HEADER]
    for area, title in AREAS.items():
        parts.append(f"\n## {title}\n\n| id | input | message |\n| --- | --- | --- |\n" + "\n".join(rows[area]) + "\n")
    (REPO / "docs").mkdir(exist_ok=True)
    (REPO / "docs" / "bad_inputs.md").write_text("".join(parts), encoding="utf-8")
    print(f"wrote docs/bad_inputs.md: {len(CASES)} entries, {failures} failing", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
