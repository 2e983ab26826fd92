"""Every entry of the bad-input catalogue (docs/bad_inputs.md) through ``cli.main``: exit code 2, one line on
stderr, no traceback, the documented message, and no code run from data."""
import pytest

from tests.helpers import REPO
from tests.trust.catalogue import CASES, MARKER, normalize, run_case

DOC = REPO / "docs" / "bad_inputs.md"


def test_catalogue_is_large_and_ids_unique():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_case(case, tmp_path, capsys)
    assert code == 2, f"exit {code}; stderr: {err}"
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert case.expect in lines[0], lines[0]
    assert not (tmp_path / MARKER).exists(), "a data file made curridistill run code"
    if case.id.startswith("run-"):  # refused before any training: nothing was trained or cached
        assert not list(tmp_path.rglob("state.pt")) and not list(tmp_path.rglob("*.safetensors"))
    documented = normalize(lines[0].removeprefix("error: "), tmp_path).replace("|", "\\|")
    assert documented in DOC.read_text(encoding="utf-8"), (
        f"docs/bad_inputs.md is out of date for {case.id}; regenerate it with `python -m tests.trust.make_catalogue`")
