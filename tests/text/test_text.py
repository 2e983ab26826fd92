"""Text classification: loaders on the shared files, tokenization and masks, bucketing, the length scorer,
text knowledge terms, and a tiny random BERT teacher distilled into every student type through the CLI."""
from __future__ import annotations

import torch
import yaml
import pytest

from curridistill import cli
from curridistill.config import DataConfig
from curridistill.curriculum.scorers import ScoreInputs, score
from curridistill.data import text
from curridistill.data.pipeline import Pipeline, load_splits
from curridistill.errors import UserError
from curridistill.knowledge import Clock, KnowledgeInputs
from curridistill.knowledge.attention_maps import AttentionMaps
from curridistill.knowledge.hidden import Hidden
from curridistill.models import build_model
from curridistill.models.taps import FeatureTaps
from tests.helpers import SHARED_DATA  # noqa: F401  (sets one torch thread)

transformers = pytest.importorskip("transformers")

from tests.text.tiny import make_bert_dir, write_table  # noqa: E402


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return make_bert_dir(tmp_path_factory.mktemp("bert") / "tiny-bert")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return write_table(tmp_path_factory.mktemp("table") / "reviews.csv")


@pytest.fixture(autouse=True)
def _token_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(text.CACHE_ENV, str(tmp_path / "cache"))


# ------------------------------------------------------------------------------ loaders (shared files)
def test_trec_counts_labels_and_latin1(shared_data):
    train, test = text.read_trec(shared_data / "text/trec/train_5500.label"), text.read_trec(shared_data / "text/trec/TREC_10.label")
    assert len(train[0]) == 5452 and len(test[0]) == 500
    counts = {c: train[1].count(c) for c in text.TREC_COARSE}
    assert counts == {"ABBR": 86, "DESC": 1162, "ENTY": 1250, "HUM": 1223, "LOC": 835, "NUM": 896}
    assert {c: test[1].count(c) for c in text.TREC_COARSE} == {"ABBR": 9, "DESC": 138, "ENTY": 94, "HUM": 65,
                                                                 "LOC": 81, "NUM": 113}
    assert any("sister\xf0city" in t for t in train[0])  # the one latin-1 byte, decoded, not dropped
    fine_train = text.read_trec(shared_data / "text/trec/train_5500.label", "fine")[1]
    fine_test = text.read_trec(shared_data / "text/trec/TREC_10.label", "fine")[1]
    assert len(set(fine_train)) == 50 and len(set(fine_test)) == 42
    tr, te = text.load_trec(shared_data, labels="fine")
    assert tr.num_classes == 50 and len(tr) == 5452 and len(te) == 500
    assert tr.x.dtype == torch.int64 and tr.x.shape[1] == te.x.shape[1]  # one width for both splits


def test_sst2_and_sms_counts(shared_data):
    tr, te = text.load_sst2(shared_data)
    assert (len(tr), len(te)) == (6920, 1821) and tr.classes == ["negative", "positive"]
    assert int((tr.y == 0).sum()) == 3310 and int((te.y == 1).sum()) == 909
    assert len(text.load_sst2(shared_data, use_dev=True)[0]) == 6920 + 872
    texts, labels = text.read_sms(shared_data / "text/sms-spam/SMSSpamCollection")
    assert len(texts) == 5574 and labels.count("spam") == 747 and labels.count("ham") == 4827
    tr, te = text.load_sms_spam(shared_data)
    assert len(tr) + len(te) == 5574 and len(te) == 1115
    assert abs(float(te.y.float().mean()) - 747 / 5574) < 0.01  # stratified hold-out


def test_trec_splits_are_stratified_with_the_words_tokenizer(shared_data):
    splits = load_splits(DataConfig(name="trec", root=str(shared_data), val_size=0.1))
    assert splits.info == {"train": 4907, "val": 545, "test": 500, "classes": 6}
    assert splits.mean == (0.0,) and splits.train.meta["kind"] == "tokens"


# ------------------------------------------------------------------------------ tokenization and masks
def test_tokenization_masks_trim_and_cache(table, bert_dir, tmp_path):
    opts = {"path": str(table), "text_column": "review", "label_column": "sentiment", "test_fraction": 0.25,
            "tokenizer": str(bert_dir), "bucket": 0}
    cfg = DataConfig(name="text-table", options=opts, batch_size=8)
    splits = load_splits(cfg)
    x = splits.train.x
    assert splits.train.classes == ["neg", "pos"] and splits.train.meta["pad_id"] == 0
    assert bool((x[:, 0] == 2).all())  # [CLS] first
    lens = text.lengths(x, 0)
    assert bool((x[torch.arange(len(x)), lens - 1] == 3).all())  # [SEP] last, then padding only
    assert bool((text.attention_mask(x, 0).sum(1) == lens).all())
    pipe = Pipeline(splits, cfg, torch.device("cpu"))
    xb, yb = pipe.batch("train", torch.tensor([0, 1, 2]))
    assert xb.dtype == torch.int64 and xb.shape[1] == int(lens[:3].max())  # trimmed to the longest row
    assert len(list((tmp_path / "cache" / "tokens").glob("*.pt"))) == 1
    again = load_splits(cfg)  # from the cache: identical ids
    assert torch.equal(again.train.x, x)


def test_bucketing_keeps_each_window_and_groups_lengths():
    lens = torch.tensor([5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 11, 12])
    batches = [torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8]), torch.tensor([9, 10, 11])]
    out = list(text.bucket_batches(batches, lens, window=3, seed=0))
    assert [len(b) for b in out] == [3, 3, 3, 3]
    assert sorted(torch.cat(out[:3]).tolist()) == list(range(9))  # the window's samples, regrouped
    assert torch.equal(out[3], torch.tensor([9, 10, 11]))
    spans = sorted((int(lens[b].min()), int(lens[b].max())) for b in out[:3])
    assert spans == [(1, 3), (4, 6), (7, 9)]


def test_length_scorer_puts_short_sentences_first():
    lens = torch.tensor([4, 1, 3])
    assert score("length", ScoreInputs(torch.zeros(3, dtype=torch.long), lengths=lens)).tolist() == [4.0, 1.0, 3.0]
    with pytest.raises(UserError, match="only text data"):
        score("length", ScoreInputs(torch.zeros(3, dtype=torch.long)))


# ------------------------------------------------------------------------------ bad inputs
def _hostile_table(tmp_path, case: str) -> dict:
    """Options of load_text_table for one hostile input (files written under tmp_path)."""
    good = tmp_path / "good.csv"
    good.write_text("review,sentiment\n" + "".join(f"text {i},{'pos' if i % 2 else 'neg'}\n" for i in range(8)))
    base = {"path": str(good), "text_column": "review", "label_column": "sentiment", "test_fraction": 0.25}
    if case == "huge-field":
        (tmp_path / "huge.csv").write_text("review,sentiment\n" + "x" * 200_000 + ",pos\n")
        return {**base, "path": str(tmp_path / "huge.csv")}
    if case == "deep-jsonl":
        (tmp_path / "deep.jsonl").write_text("[" * 100_000 + "\n")
        return {**base, "path": str(tmp_path / "deep.jsonl")}
    if case in ("empty-text", "header-twice"):
        header, first = {"empty-text": ("review,sentiment", " ,pos"), "header-twice": ("review,review,sentiment", "a,b,pos")}[case]
        (tmp_path / f"{case}.csv").write_text(f"{header}\n{first}\n" + "".join(
            f"text {i},{'pos' if i % 2 else 'neg'}\n" for i in range(8)))
        return {**base, "path": str(tmp_path / f"{case}.csv")}
    return {"unknown-encoding": {**base, "encoding": "bogus"},
            "labels-as-text": {**base, "text_column": "sentiment"},
            "test-is-train": {**base, "test_path": str(good), "test_fraction": None},
            "test-twice": {**base, "test_path": str(good)},
            "seed-not-int": {**base, "split_seed": "abc"}}[case]


@pytest.mark.parametrize("case, match", [
    ("huge-field", r"huge.csv:\d+: cannot read this CSV row .*field larger than field limit"),
    ("deep-jsonl", "deep.jsonl:1: nested too deeply"),
    ("empty-text", "empty-text.csv: row 1 has an empty 'review'; fill or remove it"),
    ("header-twice", "header-twice.csv: the header names column\\(s\\) 'review' more than once"),
    ("unknown-encoding", "encoding 'bogus' is not a text encoding"),
    ("labels-as-text", "text_column and label_column are both 'sentiment'"),
    ("test-is-train", "test_path is the training file"),
    ("test-twice", "test_path and test_fraction both"),
    ("seed-not-int", "split_seed is 'abc'"),
])
def test_hostile_text_tables_are_one_line(tmp_path, case, match):
    with pytest.raises(UserError, match=match) as err:
        text.load_text_table(**_hostile_table(tmp_path, case))
    assert "\n" not in str(err.value)


def test_a_csv_saved_with_a_byte_order_mark_reads_its_first_column(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM, which would otherwise become part of the first column's name."""
    path = tmp_path / "excel.csv"
    path.write_text("review,sentiment\n" + "".join(f"text {i},{'pos' if i % 2 else 'neg'}\n" for i in range(8)),
                    encoding="utf-8-sig")
    texts, labels = text.read_table(path, "review", "sentiment")
    assert texts[0] == "text 0" and labels[:2] == ["neg", "pos"]


def test_bad_text_inputs_are_user_errors(table, tmp_path):
    base = {"path": str(table), "text_column": "review", "label_column": "sentiment", "test_fraction": 0.25}
    with pytest.raises(UserError, match="no column 'text'.*columns: review, sentiment"):
        text.load_text_table(**{**base, "text_column": "text"})
    with pytest.raises(UserError, match="no column 'stars'"):
        text.load_text_table(**{**base, "label_column": "stars"})
    with pytest.raises(UserError, match="not a readable file"):
        text.load_text_table(**{**base, "path": str(tmp_path)})  # a directory, not a file
    binary = tmp_path / "bad.csv"
    binary.write_bytes(b"review,sentiment\n\xff\xfe,pos\n")
    with pytest.raises(UserError, match="not utf-8 text"):
        text.load_text_table(**{**base, "path": str(binary)})
    with pytest.raises(UserError, match="not found"):
        text.load_text_table(**{**base, "path": str(tmp_path / "missing.csv")})
    with pytest.raises(UserError, match="model directory .* not found"):
        build_model("hf", 2, 1, {"path": str(tmp_path / "no-such-dir")})
    with pytest.raises(UserError, match="file 'train_5500.label' not found"):
        text.load_trec(tmp_path)


def test_bad_input_through_the_cli_exits_2_with_one_line(table, tmp_path, capsys):
    cfg = _config(tmp_path, table, tmp_path / "missing-bert", {"name": "text-cnn"})
    cfg["data"]["options"]["tokenizer"] = "words"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing-bert" in err and "not found" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------------------ knowledge for text
def _features(model, x, paths):
    with FeatureTaps(model, paths) as taps:
        logits = model(x)
    return logits, dict(taps.features)


def test_hidden_state_matching_with_a_layer_map(bert_dir):
    torch.manual_seed(0)
    teacher = build_model("hf", 2, 1, {"path": str(bert_dir)}).eval()
    student = build_model("text-transformer", 2, 1, {"vocab_size": 25, "pad_id": 0, "layers": 1, "hidden": 16, "heads": 2})
    x = torch.tensor([[2, 5, 6, 3, 0, 0], [2, 7, 8, 9, 10, 3]])
    layers = {"backbone.encoder.layer.0": "backbone.encoder.layer.1", "backbone.embeddings": "backbone.embeddings"}
    term = Hidden(Hidden.Params(layers=layers, mask="mask"))
    assert term.feature_paths() == {"student": [*layers, "mask"], "teacher": list(layers.values())}

    def inputs(xx):
        with torch.no_grad():
            t_logits, t_feats = _features(teacher, xx, list(layers.values()))
        s_logits, s_feats = _features(student, xx, term.feature_paths()["student"])
        return KnowledgeInputs(s_logits, torch.tensor([0, 1]), t_logits, [t_logits], s_feats, [t_feats], clock=Clock())

    first = inputs(x)
    term.build(first)
    assert [tuple(p.weight.shape) for p in term.projections.values()] == [(32, 16), (32, 16)]  # learned W_h
    loss = term(first)
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert student.backbone.encoder.layer[0].output.dense.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
    # padding does not count: features at pad positions may be anything
    feats = dict(first.student_features)
    noisy = feats["backbone.encoder.layer.0"].detach().clone()
    noisy[0, 4:] = 100.0
    moved = KnowledgeInputs(first.student_logits, first.targets, first.teacher_logits, first.teachers_logits,
                            {**feats, "backbone.encoder.layer.0": noisy}, first.teacher_features)
    real = noisy.clone()
    real[0, 1] = 100.0  # a real token of sample 0
    moved_real = KnowledgeInputs(first.student_logits, first.targets, first.teacher_logits, first.teachers_logits,
                                 {**feats, "backbone.encoder.layer.0": real}, first.teacher_features)
    with torch.no_grad():
        assert torch.allclose(term(moved)[0], term(first)[0].detach())
        assert not torch.allclose(term(moved_real)[0], term(first)[0].detach())
    relations = AttentionMaps(AttentionMaps.Params(layers={"backbone.encoder.layer.0.attention.self.query":
                                                           "backbone.encoder.layer.1.attention.self.query"},
                                                   heads=2, mask="mask"))
    paths = relations.feature_paths()
    with torch.no_grad():
        t_logits, t_feats = _features(teacher, x, paths["teacher"])
    s_logits, s_feats = _features(student, x, paths["student"])
    r = relations(KnowledgeInputs(s_logits, torch.tensor([0, 1]), t_logits, [t_logits], s_feats, [t_feats]))
    assert r.shape == (2,) and bool((r >= 0).all())


# ------------------------------------------------------------------------------ distillation through the CLI
def _config(tmp_path, table, bert_dir, student, loss=None, epochs=1, baseline=False, curriculum=None):
    lesson = {"epochs": epochs, "loss": loss or {"ce": 0.5, "kd": {"weight": 0.5, "temperature": 2}},
              "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0}}
    if curriculum:
        lesson["curriculum"] = curriculum
    return {
        "data": {"name": "text-table", "batch_size": 16, "val_size": 0.15,
                 "options": {"path": str(table), "text_column": "review", "label_column": "sentiment",
                             "test_fraction": 0.25, "tokenizer": str(bert_dir), "bucket": 3}},
        "teacher": {"hf": str(bert_dir), "course": [{"epochs": 1, "optimizer": {"name": "adamw", "lr": 0.003}}]},
        "student": student,
        "baseline": {"enabled": baseline},
        "course": [lesson],
        "run": {"seed": 0, "device": "cpu", "cache_dir": str(tmp_path / "cache"), "out": str(tmp_path / "runs"),
                "tensorboard": False, "eval": {"latency_runs": 2, "throughput_runs": 1, "throughput_batch": 8}},
    }


STUDENTS = {
    "text-cnn": {"name": "text-cnn", "kwargs": {"embed_dim": 8, "filters": 4}},
    "text-bilstm": {"name": "text-bilstm", "kwargs": {"embed_dim": 8, "hidden": 8}},
    "text-transformer": {"name": "text-transformer", "kwargs": {"layers": 1, "hidden": 16, "heads": 2}},
}


@pytest.mark.parametrize("kind", list(STUDENTS))
def test_tiny_bert_teacher_distills_into_each_student_type(kind, table, bert_dir, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, table, bert_dir, STUDENTS[kind], baseline=kind == "text-cnn")))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    report = yaml.safe_load((tmp_path / "run" / "report.json").read_text())
    assert report["teacher"]["params"] > report["student"]["params"]
    assert 0.0 <= report["student"]["accuracy"] <= 1.0
    spec = yaml.safe_load((tmp_path / "run" / "student" / "model.json").read_text())
    assert spec["kwargs"]["vocab_size"] == 25 and spec["kwargs"]["pad_id"] == 0  # from the teacher's tokenizer


def test_distilbert_style_init_hidden_and_attention_terms_and_length_curriculum(table, bert_dir, tmp_path):
    student = {"name": "text-transformer", "kwargs": {"init_from": str(bert_dir), "init_layers": [1]}}
    loss = {"ce": 0.5, "kd": {"weight": 0.5, "temperature": 2},
            "hidden": {"weight": 1.0, "mask": "mask",
                       "layers": {"backbone.encoder.layer.0": "backbone.encoder.layer.1"}},
            "attention_maps": {"weight": 1.0, "mask": "mask", "heads": 2,
                               "layers": {"backbone.encoder.layer.0.attention.self.query":
                                          "backbone.encoder.layer.1.attention.self.query"}}}
    curriculum = {"scorer": "length", "pacing": {"kind": "linear", "start": 0.5, "end_at": 0.5}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, table, bert_dir, student, loss, epochs=2, curriculum=curriculum)))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    records = [yaml.safe_load(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    student_records = [r for r in records if r["model"] == "student"]
    assert set(student_records[0]["losses"]) == {"ce", "kd", "hidden", "attention_maps"}
    assert student_records[0]["data_fraction"] < 1.0
    # DistilBERT-style: the student's layer 0 started as the teacher's layer 1 (same width: no projection)
    built = build_model("text-transformer", 2, 1, {"vocab_size": 25, "pad_id": 0, **student["kwargs"]})
    teacher = build_model("hf", 2, 1, {"path": str(bert_dir)})
    torch.testing.assert_close(built.backbone.encoder.layer[0].state_dict(), teacher.backbone.encoder.layer[1].state_dict())


def test_new_texts_are_encoded_with_the_training_tokenizer(bert_dir):
    spec = {"data": {"options": {"tokenizer": str(bert_dir), "max_length": 8}}}
    ids = text.encode_texts(["good movie", "the film was very very very very bad"], spec)
    assert ids.shape == (2, 8) and ids[0].tolist()[:4] == [2, 5, 17, 3] and ids[0, 4:].eq(0).all()
    with pytest.raises(UserError, match="built-in 'words' tokenizer"):
        text.encode_texts(["x"], {"data": {"options": {}}})


def test_pretrained_encoders_load_without_hub_kernels(bert_dir):
    """Recent transformers (5.25 here) turns Hub kernels on by default when the `kernels` package is installed; on a
    GPU they are kernel code fetched from the Hub and run (network, code from outside, numbers that vary by machine)."""
    model = build_model("hf", 2, 1, {"path": str(bert_dir)})
    assert getattr(model.backbone, "use_kernels", False) is False
    # on the CPU the kernelized encoder (transformers' default) computes the same outputs: results measured with
    # it on, as the README's text tables were, stand
    import transformers

    kernelized = transformers.AutoModel.from_pretrained(str(bert_dir), local_files_only=True).eval()
    ids = torch.randint(1, 20, (3, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(kernelized(input_ids=ids).last_hidden_state,
                           model.backbone.eval()(input_ids=ids).last_hidden_state)


def test_hf_shorthand_in_the_config():
    from curridistill.config import validate_config

    cfg = validate_config({"teacher": {"hf": "minilm", "kwargs": {"pooling": "cls"}}, "student": {"name": "text-cnn"},
                           "course": [{"epochs": 1}]})
    assert cfg.teacher.name == "hf" and cfg.teacher.kwargs == {"path": "minilm", "pooling": "cls"}
    with pytest.raises(UserError, match="needs a local directory"):
        build_model("hf", 2, 1, {})


@pytest.mark.parametrize("augment", [None, {"token_mask": 0.2}, {"token_span": 1.0, "span_max": 2},
                                     {"token_mask": 0.1, "token_replace": 0.1, "token_span": 0.5, "span_max": 3}])
def test_batch_width_from_the_host_equals_trimming_the_batch(table, augment):
    """A text batch's width comes from token counts on the host (no read of the device): the stored ids' counts,
    or with augmentation the counts its epoch's draws imply. Either way: what ``trim`` of the batch gives."""
    opts = {"path": str(table), "text_column": "review", "label_column": "sentiment", "test_fraction": 0.25,
            "tokenizer": "words", "bucket": 0}
    cfg = DataConfig(name="text-table", options=opts, batch_size=8, **({"augment": augment} if augment else {}))
    pipe = Pipeline(load_splits(cfg), cfg, torch.device("cpu"))
    pad = pipe.splits.train.meta["pad_id"]
    for idx in (torch.tensor([0, 1, 2]), torch.tensor([5]), torch.arange(40), torch.arange(len(pipe.split("train")))):
        for epoch in (None, 0, 3):
            xb, _ = pipe.batch("train", idx, epoch=epoch)
            full = pipe.split("train").x[idx]
            if epoch is not None and augment:
                full = pipe._aug.apply(full, {k: v[idx] for k, v in pipe.epoch_params(epoch).items()})
            assert torch.equal(xb, text.trim(full, pad))


def test_text_training_reads_the_host_once_per_epoch_not_per_step(table, tmp_path, monkeypatch):
    """A text-cnn teacher and student on the built-in words vocabulary (no Hugging Face model): the
    dispatch-mode watch of tests/engine/test_host_sync.py sees no host read that grows with the steps."""
    import collections

    from curridistill import api
    from curridistill.config import load_config
    from tests.engine.test_host_sync import watch_host_reads

    reads = watch_host_reads(monkeypatch)
    counts = []
    for batch in (24, 12):
        cfg = _config(tmp_path / str(batch), table, tmp_path, {"name": "text-cnn", "kwargs": {"embed_dim": 8, "filters": 4}})
        cfg["data"]["options"]["tokenizer"] = "words"
        cfg["data"]["batch_size"] = batch
        cfg["teacher"] = {"name": "text-cnn", "kwargs": {"embed_dim": 16, "filters": 8},
                          "course": [{"epochs": 1, "optimizer": {"name": "adamw", "lr": 0.003}}]}
        api.run(load_config(cfg), out=tmp_path / f"r{batch}")
        counts.append(collections.Counter(reads.where))
        reads.where.clear()
    grown = {w: (counts[0][w], n) for w, n in counts[1].items() if n > counts[0][w]}
    assert not grown, f"host reads that grow with the steps: {grown}"
