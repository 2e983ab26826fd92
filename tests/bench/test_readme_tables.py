"""The README shows the benchmark tables exactly as the benchmark scripts wrote them, so a number in the
README is always one that a recorded command produced (and a rerun that changes a table fails here until
the README is updated)."""
import json

import pytest

from tests.helpers import REPO, load_benchmark

RESULTS = REPO / "benchmarks" / "results"
TABLES = sorted(RESULTS.glob("*.md"))


def test_there_are_tables():
    names = {t.name for t in TABLES}
    published = {"throughput_cpu.md", "accuracy_resnet56_resnet8_cpu.md",
                 "accuracy_resnet56_resnet20_cpu.md"}
    assert published <= names


@pytest.mark.parametrize("table", TABLES, ids=[t.name for t in TABLES])
def test_readme_includes_each_table_verbatim(table):
    readme = (REPO / "README.md").read_text()
    assert table.read_text().strip() in readme, f"README.md does not include {table.name} as written; paste it again"


@pytest.mark.parametrize("table", TABLES, ids=[t.name for t in TABLES])
def test_each_table_has_its_json_with_the_command(table):
    if table.name.startswith("throughput_"):
        sources = sorted(RESULTS.glob("throughput_*_*.json"))
    else:
        sources = [table.with_suffix(".json")]
    assert sources and all(p.is_file() for p in sources)
    for path in sources:
        record = json.loads(path.read_text())
        assert record["command"] and record["git"]["commit"] and record["machine"] and record["date"], path.name


def test_paste_tables_replaces_only_the_marked_block(tmp_path):
    (tmp_path / "t.md").write_text("| a |\n|---|\n| 2 |\n")
    readme = "intro\n<!-- table: t.md -->\n| a |\n|---|\n| 1 |\n<!-- /table -->\n| other | table |\n"
    text, pasted = load_benchmark("paste_tables").paste(readme, tmp_path)
    assert pasted == ["t.md"]
    assert text == "intro\n<!-- table: t.md -->\n| a |\n|---|\n| 2 |\n<!-- /table -->\n| other | table |\n"


def test_paste_tables_refuses_a_marker_without_its_table(tmp_path):
    with pytest.raises(SystemExit, match="missing.md"):
        load_benchmark("paste_tables").paste("<!-- table: missing.md -->\n<!-- /table -->\n", tmp_path)


def test_paste_tables_reaches_a_table_in_a_results_subfolder(tmp_path):
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "pruned_seed0.md").write_text("| acc |\n|---|\n| 0.7 |\n")
    readme = "<!-- table: seeds/pruned_seed0.md -->\nold\n<!-- /table -->\n"
    text, pasted = load_benchmark("paste_tables").paste(readme, tmp_path)
    assert pasted == ["seeds/pruned_seed0.md"] and "| 0.7 |" in text and "old" not in text
