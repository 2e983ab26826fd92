"""Predict with a text checkpoint: the spec carries the vocabulary, new text is tokenized exactly as the training
data was, .txt / .csv / .tsv files and strings give the model's own probabilities with class names, bad input
files give one line and exit code 2."""
from __future__ import annotations

import json

import pytest
import torch

import curridistill
from curridistill import cli
from curridistill.config import DataConfig
from curridistill.data import text
from curridistill.data.pipeline import load_splits
from curridistill.errors import UserError
from curridistill.models.checkpoint import load_model, read_spec
from curridistill.serve import predict_files, predict_texts
from tests.text.conftest import N


def _own_forward(trained) -> tuple[torch.Tensor, torch.Tensor]:
    """The training pipeline's ids of the first N test questions (trimmed as a batch) and the model's probabilities."""
    spec = read_spec(trained["ckpt"])
    test = load_splits(DataConfig(**spec["data"])).test
    ids = text.trim(test.x[:N], spec["kwargs"]["pad_id"])
    model, _ = load_model(trained["ckpt"])
    with torch.no_grad():
        return ids, torch.softmax(model(ids), dim=1)


def test_spec_carries_the_vocabulary_and_encodes_as_training(trained):
    spec = read_spec(trained["ckpt"])
    state = spec["tokenizer"]
    assert state["kind"] == "words" and state["max_length"] == 32
    assert len(state["vocab"]) + 2 == spec["kwargs"]["vocab_size"] > 1000  # the full training split's words
    ids, _ = _own_forward(trained)
    assert torch.equal(text.encode_texts(trained["questions"], spec), ids)


def test_cli_txt_gives_the_models_own_probabilities_with_class_names(trained):
    txt = trained["dir"] / "questions.txt"
    txt.write_text("\n".join(trained["questions"][:5]) + "\n\n" + "\n".join(trained["questions"][5:]) + "\n",
                   encoding="utf-8")  # a blank line is skipped
    out = trained["dir"] / "pred.json"
    assert cli.main(["predict", str(trained["ckpt"]), str(txt), "--top-k", "3", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    _, probs = _own_forward(trained)
    assert [r["text"] for r in rows] == trained["questions"] and rows[5]["input"] == f"{txt}:7"
    torch.testing.assert_close(torch.tensor([r["probabilities"] for r in rows]), probs, rtol=0, atol=1e-6)
    values, labels = probs.topk(3, dim=1)
    for r, lab in zip(rows, labels.tolist()):
        assert [t["label"] for t in r["top_k"]] == lab
        assert [t["class"] for t in r["top_k"]] == [text.TREC_COARSE[i] for i in lab]


def test_csv_tsv_and_strings_predict_the_same(trained, capsys):
    qs = trained["questions"]
    csv_path = trained["dir"] / "q.csv"
    csv_path.write_text("id,question\n" + "".join(f'{i},"{q.replace(chr(34), chr(34) * 2)}"\n' for i, q in enumerate(qs)),
                        encoding="utf-8")
    tsv_path = trained["dir"] / "q.tsv"
    tsv_path.write_text("text\n" + "".join(f"{q}\n" for q in qs), encoding="utf-8")
    by_csv, classes = predict_files(trained["ckpt"], [csv_path], top_k=2, text_column="question")
    by_tsv, _ = predict_files(trained["ckpt"], [tsv_path], top_k=2)
    by_api = curridistill.predict(trained["ckpt"], qs, top_k=2)  # strings through the Python API
    by_texts, _ = predict_texts(trained["ckpt"], qs, top_k=2)
    assert classes == text.TREC_COARSE
    for rows in (by_tsv, by_api, by_texts):
        assert [r["probabilities"] for r in rows] == [r["probabilities"] for r in by_csv]
        assert [r["text"] for r in rows] == qs
    assert by_api[0]["input"] == "texts[0]" and by_csv[0]["input"] == f"{csv_path}:2"
    assert curridistill.predict(trained["ckpt"], qs[0])[0]["probabilities"] == by_csv[0]["probabilities"]
    assert cli.main(["predict", str(trained["ckpt"]), str(csv_path), "--text-column", "question", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(",")[-1] == "text" and len(lines) == len(qs) + 1


@pytest.mark.parametrize("name, content, message", [
    ("latin1.txt", "caf\xe9 ?\n".encode("latin-1"), "is not UTF-8 text (byte 3)"),
    ("empty.txt", b"\n  \n", "holds no texts"),
    ("two.csv", b"id,question\n1,who ?\n", "which column holds the texts?"),
    ("short.csv", b"a,text\n1\n", "has no 'text' value"),
    ("image.png", b"\x89PNG", "give a .txt file"),
    ("missing.txt", None, "input not found"),
])
def test_bad_input_file_is_one_line_and_exit_2(trained, capsys, name, content, message):
    path = trained["dir"] / "bad" / name
    path.parent.mkdir(exist_ok=True)
    if content is not None:
        path.write_bytes(content)
    assert cli.main(["predict", str(trained["ckpt"]), str(path)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(path) in err[0], err
    assert "Traceback" not in captured.err and not captured.out


def test_a_missing_file_name_is_not_taken_as_a_text(trained):
    with pytest.raises(UserError, match="input not found"):
        curridistill.predict(trained["ckpt"], ["questions_typo.txt"])


def test_hf_tokenizer_is_checked_against_its_digest(tmp_path):
    pytest.importorskip("transformers")
    from tests.text.tiny import make_bert_dir

    bert = make_bert_dir(tmp_path / "bert")
    tok = text.HFTokenizer(str(bert))
    spec = {"tokenizer": {**tok.state(), "max_length": 6}, "kwargs": {"vocab_size": tok.vocab_size, "pad_id": 0}}
    ids = text.encode_texts(["good movie", "the film was very very very very bad"], spec)
    assert ids.shape == (2, 6) and ids[0].tolist() == tok.encode(["good movie"], 6)[0] + [0, 0]
    (bert / "vocab.txt").write_text((bert / "vocab.txt").read_text() + "extra\n")
    with pytest.raises(UserError, match="differ from those this model was trained with"):
        text.encode_texts(["good"], spec)


def test_api_predict_on_token_ids_equals_the_models_forward(trained):
    """`curridistill.predict(checkpoint, ids)`: integer ids stay ids (no float scaling, no pixel normalization)."""
    from curridistill import predict

    ids, probs = _own_forward(trained)
    rows = predict(trained["ckpt"], ids, top_k=1)
    assert [r["label"] for r in rows] == probs.argmax(1).tolist()
    assert torch.allclose(torch.tensor([r["probability"] for r in rows]), probs.max(1).values, atol=1e-6)
    with pytest.raises(UserError, match="token ids"):
        predict(trained["ckpt"], ids.float())
