"""Teacher-output cache: hits, misses, keys, stale/corrupt files, equality with the online teacher, and
cached-vs-online distillation on digits."""
import json

import pytest
import torch
from safetensors import safe_open

from curridistill import api
from curridistill.config import DataConfig, load_config
from curridistill.data.pipeline import Pipeline, load_splits
from curridistill.models import build_model
from curridistill.train.teacher_cache import TeacherCache, cache_key, tensors_checksum
from curridistill.train.teachers import TeacherBank
from tests.helpers import tiny_config

AUG = {"crop_padding": 1, "flip": True}


def make_pipeline(augment=AUG, data_seed=0) -> Pipeline:
    cfg = DataConfig(name="digits", augment=augment or {}, data_seed=data_seed, eval_batch_size=256)
    return Pipeline(load_splits(cfg), cfg, torch.device("cpu"))


def make_teacher(seed=0):
    torch.manual_seed(seed)
    model = build_model("cnn", 10, 1, {"widths": [8, 16]})
    with torch.no_grad():  # random BN statistics, so eval mode is not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def pipe():
    return make_pipeline()


@torch.inference_mode()
def online(model, pipe, idx, epoch):
    x, _ = pipe.batch("train", idx, epoch=epoch)
    return model(x).float()


def test_miss_builds_then_hits_memory_and_disk(tmp_path, pipe):
    teacher = make_teacher()
    cache = TeacherCache(teacher, pipe, tmp_path)
    idx = torch.tensor([5, 0, 17, 3])
    first, _ = cache.lookup(idx, epoch=0)
    assert cache.stats["builds"] == 1 and cache.path(0).is_file()
    assert cache.path(0) == tmp_path / "teacher_outputs" / cache.key / "epoch-0.safetensors"
    again, _ = cache.lookup(torch.tensor([1, 2]), epoch=0)
    assert cache.stats == {**cache.stats, "builds": 1, "hits": 1}
    with safe_open(str(cache.path(0)), framework="pt") as f:
        meta = f.metadata()
        stored = f.get_tensor("logits")
    assert meta["key"] == cache.key and int(meta["n"]) == len(pipe.splits.train) and int(meta["c"]) == 10
    assert stored.dtype == torch.float16 and meta["checksum"] == tensors_checksum({"logits": stored})
    fresh = TeacherCache(make_teacher(), pipe, tmp_path)  # same weights, new process-like object: read from disk
    assert fresh.key == cache.key
    again, _ = fresh.lookup(idx, epoch=0)
    assert fresh.stats["loads"] == 1 and fresh.stats["builds"] == 0
    assert torch.equal(first, again)
    fresh.lookup(idx, epoch=1)  # another augmentation epoch: another entry
    assert fresh.stats["builds"] == 1 and fresh.path(1).is_file()


def test_unaugmented_inputs_share_one_entry(tmp_path, pipe):
    plain = make_pipeline(augment=None)
    cache = TeacherCache(make_teacher(), plain, tmp_path)
    for epoch in (None, 0, 1, 7):
        cache.lookup(torch.arange(4), epoch=epoch)
    assert cache.stats["builds"] == 1
    assert [p.name for p in cache.dir.iterdir()] == ["epoch-none.safetensors"]
    aug = TeacherCache(make_teacher(), pipe, tmp_path)  # epoch=None on an augmenting pipeline: un-augmented entry
    a, _ = aug.lookup(torch.arange(50), epoch=None)
    assert aug.path(None).name == "epoch-none.safetensors"
    torch.testing.assert_close(a, online(aug.model, pipe, torch.arange(50), None), atol=2e-2, rtol=2e-3)


def test_key_changes_with_weights_augmentation_and_seed(pipe):
    teacher = make_teacher()
    base = cache_key(teacher, pipe)
    assert cache_key(make_teacher(), pipe) == base
    other = make_teacher()
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-3
    assert cache_key(other, pipe) != base
    assert cache_key(teacher, make_pipeline(augment={"crop_padding": 2, "flip": True})) != base
    assert cache_key(teacher, make_pipeline(augment={"crop_padding": 1, "flip": False})) != base
    assert cache_key(teacher, make_pipeline(data_seed=1)) != base
    assert cache_key(teacher, pipe, split="val") != base


def _fresh_logits(pipe, epoch):
    return torch.cat([online(make_teacher(), pipe, torch.arange(s, min(s + 256, len(pipe.splits.train))), epoch)
                      for s in range(0, len(pipe.splits.train), 256)]).half()


@pytest.mark.parametrize("damage", ["truncate", "garble", "garbage", "empty"])
def test_corrupt_file_is_detected_deleted_and_rebuilt(tmp_path, pipe, capsys, damage):
    cache = TeacherCache(make_teacher(), pipe, tmp_path)
    cache.entry(2)
    path = cache.path(2)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garble":  # flip bytes inside the tensor data: the file still parses, the checksum does not match
        for i in range(len(data) - 64, len(data) - 32):
            data[i] ^= 0x5A
    elif damage == "garbage":
        data = bytearray(b"not a safetensors file at all" * 10)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    fresh = TeacherCache(make_teacher(), pipe, tmp_path)
    entry = fresh.entry(2)
    err = capsys.readouterr().err
    assert "warning:" in err and "corrupt" in err and str(path) in err
    assert fresh.stats["rebuilt"] == 1 and fresh.stats["builds"] == 1
    assert torch.equal(entry.logits, _fresh_logits(pipe, 2))
    assert TeacherCache(make_teacher(), pipe, tmp_path).read(path, "2") is not None  # the rewritten file is valid


@pytest.mark.parametrize("stale", ["key", "shape", "epoch"])
def test_stale_file_is_detected_and_rebuilt(tmp_path, pipe, capsys, stale):
    from curridistill.io import save_tensors

    cache = TeacherCache(make_teacher(), pipe, tmp_path)
    n = len(pipe.splits.train)
    logits = torch.zeros(n, 10, dtype=torch.float16)
    meta = {"format": "curridistill-teacher-outputs-v1", "key": cache.key, "epoch": "0", "n": str(n), "c": "10",
            "features": "[]"}
    if stale == "key":
        meta["key"] = "0" * 24
    elif stale == "shape":
        logits = torch.zeros(n - 1, 10, dtype=torch.float16)
    else:
        meta["epoch"] = "3"
    meta["checksum"] = tensors_checksum({"logits": logits})
    save_tensors(cache.path(0), {"logits": logits}, metadata=meta)
    entry = cache.entry(0)
    err = capsys.readouterr().err
    assert "stale" in err and "deleted" in err
    assert cache.stats["rebuilt"] == 1
    assert torch.equal(entry.logits, _fresh_logits(pipe, 0))


def test_cached_logits_equal_online_teacher_on_augmented_epoch(tmp_path, pipe):
    teacher = make_teacher()
    cache = TeacherCache(teacher, pipe, tmp_path)
    g = torch.Generator().manual_seed(0)
    for epoch in (0, 3):
        idx = torch.randperm(len(pipe.splits.train), generator=g)[:200]
        cached, _ = cache.lookup(idx, epoch=epoch)
        want = online(teacher, pipe, idx, epoch)
        torch.testing.assert_close(cached, want, atol=1e-2, rtol=1e-3)  # float16 storage
        assert not torch.allclose(want, online(teacher, pipe, idx, None))  # the augmentation did change the inputs


def test_bank_serves_cache_and_falls_back_online_for_features(tmp_path, pipe):
    teacher = make_teacher()
    bank = TeacherBank([teacher], [1.0], pipeline=pipe, cache_dir=tmp_path)
    online_bank = TeacherBank([make_teacher()], [1.0])
    idx = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    x, y = pipe.batch("train", idx, epoch=1)
    out, ref = bank(x, y, indices=idx, epoch=1), online_bank(x, y, indices=idx, epoch=1)
    assert bank.source == ["cache"] and online_bank.source == ["online"]
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-2, rtol=1e-3)
    assert not out.logits.is_inference()
    assert bank(x, y).logits is not None and bank.source == ["online"]  # no indices: online
    path = next(n for n, m in teacher.named_modules() if isinstance(m, torch.nn.Conv2d))
    bank.set_paths([[path]])
    feats = bank(x, y, indices=idx, epoch=1)
    assert bank.source == ["online"] and path in feats.features[0]  # features needed, not cached: online
    cached = TeacherBank([teacher], [1.0], pipeline=pipe, cache_dir=tmp_path, cache_features=True)
    cached.set_paths([[path]])
    got = cached(x, y, indices=idx, epoch=1)
    assert cached.source == ["cache"]
    torch.testing.assert_close(got.features[0][path], feats.features[0][path], atol=1e-2, rtol=1e-3)
    with safe_open(str(cached.caches[0].path(1)), framework="pt") as f:
        assert json.loads(f.metadata()["features"]) == [path]
    # new weights (an RCO anchor): a new key, so the old outputs are never served
    old_key = bank.caches[0].key
    bank.set_paths([[]])
    bank.load_teacher_state(0, make_teacher(seed=5).state_dict())
    assert bank.caches[0].key != old_key
    torch.testing.assert_close(bank(x, y, indices=idx, epoch=1).logits, online(teacher, pipe, idx, 1), atol=1e-2, rtol=1e-3)


def test_features_float16_cannot_hold_are_cached_in_float32(tmp_path, pipe):
    """A teacher whose activations pass float16's 65504 (no BN, large weights): the cache keeps that feature in
    float32 and serves the online values, where float16 would serve inf (and a NaN loss)."""
    teacher = make_teacher()
    path, conv = next((n, m) for n, m in teacher.named_modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        conv.weight.mul_(1e5)
    idx = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    x, y = pipe.batch("train", idx, epoch=1)
    online_bank = TeacherBank([teacher], [1.0])
    online_bank.set_paths([[path]])
    want = online_bank(x, y).features[0][path]
    assert want.abs().max() > torch.finfo(torch.float16).max
    cached = TeacherBank([teacher], [1.0], pipeline=pipe, cache_dir=tmp_path, cache_features=True)
    cached.set_paths([[path]])
    got = cached(x, y, indices=idx, epoch=1).features[0][path]
    assert cached.source == ["cache"] and torch.isfinite(got).all()
    torch.testing.assert_close(got, want)
    with safe_open(str(cached.caches[0].path(1)), framework="pt") as f:
        assert f.get_tensor(f"feature/{path}").dtype == torch.float32


def test_cached_and_online_distillation_reach_the_same_student(tmp_path):
    def cfg(cache: bool):
        raw = tiny_config(tmp_path, epochs=2, baseline={"enabled": False})
        raw["data"]["augment"] = AUG
        raw["run"]["teacher_cache"] = cache
        return load_config(raw)

    cached = api.run(cfg(True), out=tmp_path / "cached")
    plain = api.run(cfg(False), out=tmp_path / "online")  # teacher reused from the shared cache_dir
    assert abs(cached["student"]["accuracy"] - plain["student"]["accuracy"]) <= 0.03
    entries = sorted(p.name for p in (tmp_path / "cache" / "teacher_outputs").glob("*/epoch-*.safetensors"))
    assert entries == ["epoch-0.safetensors", "epoch-1.safetensors"]  # one per augmentation epoch
    assert len(list((tmp_path / "cache" / "teacher_outputs").glob("*/eval-test-*.safetensors"))) == 1
    again = api.run(cfg(True), out=tmp_path / "cached-again")  # read from disk: exactly the built outputs
    assert (again["student"]["accuracy"], again["student"]["loss"]) == (cached["student"]["accuracy"], cached["student"]["loss"])


# ------------------------------------------------------------------------------ teacher test logits
def test_eval_logits_are_computed_once_exactly_and_rebuilt_when_corrupt(tmp_path, pipe, capsys):
    from curridistill.evaluate.metrics import predict_logits
    from curridistill.train.teacher_cache import cached_eval_logits

    teacher = make_teacher()
    fresh = predict_logits(teacher, pipe, "test")
    first = cached_eval_logits(teacher, pipe, "test", tmp_path)
    files = list((tmp_path / "teacher_outputs").glob("*/eval-test-*.safetensors"))
    assert len(files) == 1 and torch.equal(first, fresh)  # float32: metrics equal a fresh pass
    stamp = files[0].stat().st_mtime_ns
    assert torch.equal(cached_eval_logits(teacher, pipe, "test", tmp_path), fresh)
    assert files[0].stat().st_mtime_ns == stamp  # served from disk, not rewritten
    other = make_teacher(seed=1)  # other weights: another key, never the first teacher's logits
    assert torch.equal(cached_eval_logits(other, pipe, "test", tmp_path), predict_logits(other, pipe, "test"))
    files[0].write_bytes(files[0].read_bytes()[:100])  # truncated
    assert torch.equal(cached_eval_logits(teacher, pipe, "test", tmp_path), fresh)
    assert "unreadable" in capsys.readouterr().err


def test_seeds_reuse_the_teacher_test_logits(tmp_path):
    raw = tiny_config(tmp_path, epochs=1)
    raw["run"]["seeds"] = [0, 1]
    api.run(load_config(raw), out=tmp_path / "run")
    files = list((tmp_path / "cache" / "teacher_outputs").glob("*/eval-test-*.safetensors"))
    assert len(files) == 1
    reports = [json.loads((tmp_path / "run" / f"seed-{s}" / "report.json").read_text()) for s in (0, 1)]
    assert reports[0]["teacher"]["accuracy"] == reports[1]["teacher"]["accuracy"]
