"""Token augmentation (data/text_augment.py): a perturbed, teacher-labelled transfer set for text distillation."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from curridistill import cli
from curridistill.config import AugmentSettings
from curridistill.data import text
from curridistill.data.text_augment import TokenAugment
from tests.helpers import SHARED_DATA  # noqa: F401  (sets one torch thread)

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = [PAD, UNK, CLS, SEP, MASK]


def _ids(n: int = 400, width: int = 14, seed: int = 0) -> torch.Tensor:
    """[CLS] w.. [SEP] [PAD].. rows with 1..width-2 content tokens drawn from ids 5..24."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.full((n, width), PAD)
    for i in range(n):
        k = int(torch.randint(1, width - 1, (1,), generator=g))
        rows[i, 0], rows[i, k + 1] = CLS, SEP
        rows[i, 1:k + 1] = torch.randint(5, 25, (k,), generator=g)
    return rows


def _augment(ids, **settings) -> TokenAugment:
    return TokenAugment(AugmentSettings(**settings), ids, PAD, MASK, SPECIAL)


def _run(aug: TokenAugment, ids, epoch=0, seed=0):
    params = aug.epoch_params(len(ids), seed, epoch)
    return aug.apply(ids, params)


def test_masking_and_replacement_touch_only_content_tokens_at_their_rates():
    ids = _ids()
    aug = _augment(ids, token_mask=0.2, token_replace=0.3)
    out = _run(aug, ids)
    content = ~torch.isin(ids, torch.tensor(SPECIAL))
    assert torch.equal(out[~content], ids[~content])  # [CLS], [SEP] and padding never change
    masked = (out == MASK) & content
    assert abs(masked.sum().item() / content.sum().item() - 0.2) < 0.03
    replaced = content & (out != MASK)
    new_tokens = out[replaced]
    assert bool(((new_tokens >= 5) & (new_tokens < 25)).all())  # replacements come from the training tokens
    changed = (out != ids) & content & ~masked  # a replacement may draw the same token: at most 30%
    assert 0.2 < changed.sum().item() / content.sum().item() <= 0.31


def test_draws_depend_on_the_sample_and_epoch_not_on_the_batch():
    ids = _ids()
    aug = _augment(ids, token_mask=0.15, token_replace=0.1, token_span=0.3)
    whole = _run(aug, ids, epoch=3)
    params = aug.epoch_params(len(ids), 0, 3)
    picked = torch.tensor([7, 300, 2, 45])
    part = aug.apply(ids[picked], {k: v[picked] for k, v in params.items()})
    assert torch.equal(part, whole[picked])
    assert torch.equal(whole, _run(aug, ids, epoch=3))  # the same epoch again: the same sentences
    assert not torch.equal(whole, _run(aug, ids, epoch=4))  # the next epoch: other sentences


def test_span_keeps_special_tokens_and_one_short_contiguous_run():
    ids = _ids()
    aug = _augment(ids, token_span=1.0, span_max=3)
    out = _run(aug, ids)
    for before, after in zip(ids.tolist(), out.tolist()):
        words = [t for t in before if t not in SPECIAL]
        kept = [t for t in after if t not in SPECIAL]
        assert after[0] == CLS and after[len(kept) + 1] == SEP and set(after[len(kept) + 2:]) <= {PAD}
        assert 1 <= len(kept) <= min(3, len(words))
        assert any(words[i:i + len(kept)] == kept for i in range(len(words)))  # a run of the sentence, in order


def test_augmentation_off_returns_the_batch_unchanged():
    ids = _ids(n=20)
    aug = _augment(ids)
    assert not aug.active and torch.equal(_run(aug, ids), ids)


@pytest.mark.parametrize("settings, message", [
    ({"token_mask": 0.6, "token_replace": 0.6}, "keep their sum <= 1"),
])
def test_inconsistent_settings_are_user_errors(settings, message):
    from curridistill.errors import UserError

    with pytest.raises(UserError, match=message):
        _augment(_ids(n=10), **settings)


def test_words_tokenizer_masks_with_the_unknown_word():
    tok = text.WordTokenizer(["who wrote hamlet ?", "what is the capital of peru ?"])
    ids = text.pad_ids(tok.encode(["who wrote the capital ?"] * 50, 8), tok.pad_id)
    aug = TokenAugment(AugmentSettings(token_mask=0.5), ids, tok.pad_id, tok.mask_id, tok.special_ids)
    out = _run(aug, ids)
    assert (out == tok.unk_id).any() and torch.equal(out == tok.pad_id, ids == tok.pad_id)


# ------------------------------------------------------------------------------ through the CLI, on real TREC questions
def _trec_config(tmp_path: Path, augment: dict, teacher: bool = True) -> Path:
    raw = {"data": {"name": "trec", "root": str(SHARED_DATA), "options": {"max_length": 24}, "subset": 160,
                    "val_size": 0.2, "batch_size": 32, "augment": augment},
           "student": {"name": "text-cnn", "kwargs": {"embed_dim": 8, "filters": 4, "kernel_sizes": [2]}},
           "baseline": {"enabled": False},
           "course": [{"name": "kd", "epochs": 2, "loss": {"ce": 0.5, "kd": {"weight": 0.5, "temperature": 2}},
                       "optimizer": {"name": "adamw", "lr": 0.01}}],
           "run": {"seed": 0, "device": "cpu", "threads": 1, "cache_dir": str(tmp_path / "cache"),
                   "tensorboard": False, "eval": {"latency_runs": 2, "throughput_runs": 1, "throughput_batch": 8}}}
    if teacher:
        raw["teacher"] = {"name": "text-cnn", "kwargs": {"embed_dim": 16, "filters": 8, "kernel_sizes": [2, 3]},
                          "course": [{"epochs": 1, "loss": {"ce": 1.0}, "optimizer": {"name": "adamw", "lr": 0.01},
                                      "augment": False}]}  # the teacher learns from the clean sentences
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_augmented_distillation_caches_the_teacher_per_epoch(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv(text.CACHE_ENV, str(tmp_path / "cache"))
    cfg = _trec_config(tmp_path, {"token_mask": 0.1, "token_replace": 0.1, "token_span": 0.25})
    assert cli.main(["run", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    entries = sorted(p.name for p in (tmp_path / "cache" / "teacher_outputs").glob("*/epoch-*.safetensors"))
    assert entries == ["epoch-0.safetensors", "epoch-1.safetensors"]  # the teacher labels each epoch's sentences
    teachers = list((tmp_path / "cache" / "teachers").iterdir())
    # no augmentation at all: the teacher (whose lesson did not augment) is the same and is reused, not trained again
    cfg = _trec_config(tmp_path, {})
    assert cli.main(["run", str(cfg), "--out", str(tmp_path / "run2"), "--quiet"]) == 0
    assert list((tmp_path / "cache" / "teachers").iterdir()) == teachers


def test_a_lesson_without_augmentation_sees_clean_sentences_and_clean_teacher_outputs(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv(text.CACHE_ENV, str(tmp_path / "cache"))
    raw = yaml.safe_load(_trec_config(tmp_path, {"token_mask": 0.3}).read_text())
    raw["course"][0]["augment"] = False
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert cli.main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    entries = sorted(p.name for p in (tmp_path / "cache" / "teacher_outputs").glob("*/epoch-*.safetensors"))
    assert entries == ["epoch-none.safetensors"]


@pytest.mark.parametrize("augment, message", [
    ({"crop_padding": 4}, "are for images and this dataset is text"),
    ({"token_mask": 0.7, "token_replace": 0.7}, "keep their sum <= 1"),
    ({"token_mask": 1.5}, "token_mask"),
])
def test_bad_text_augmentation_is_one_line_and_exit_2(shared_data, augment, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(text.CACHE_ENV, str(tmp_path / "cache"))
    assert cli.main(["run", str(_trec_config(tmp_path, augment, teacher=False)), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "student").exists()


def test_token_augmentation_on_images_is_one_line_and_exit_2(tmp_path, capsys):
    raw = {"data": {"name": "digits", "augment": {"token_mask": 0.1}},
           "student": {"name": "mlp"}, "course": [{"epochs": 1}], "run": {"device": "cpu"}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "are for text (token ids) and this dataset is not" in err and len(err.splitlines()) == 1
