"""BatchAugment: per-sample determinism, batch independence, crop/flip/cutout geometry, shapes."""
from __future__ import annotations

import pydantic
import pytest
import torch
import torch.nn.functional as F

from curridistill.data.augment import AugmentConfig, BatchAugment
from curridistill.errors import UserError

SHAPE = (3, 16, 16)


def make(**kw) -> BatchAugment:
    return BatchAugment(AugmentConfig(**kw), SHAPE)


def images(n: int, seed: int = 0, shape=SHAPE) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def run(aug: BatchAugment, x: torch.Tensor, idx: torch.Tensor, n: int, seed: int = 0, epoch: int = 0) -> torch.Tensor:
    params = aug.epoch_params(n, seed, epoch)
    return aug.apply(x[idx], {k: v[idx].to(x.device) for k, v in params.items()})


ALL = dict(crop_padding=4, flip=True, cutout=6)


def test_inactive_is_identity_and_shapes_preserved():
    x = images(5)
    off = make()
    assert not off.active and off.epoch_params(5, 0, 0) == {}
    assert off.apply(x, {}) is x
    aug = make(**ALL)
    assert aug.active
    for dtype in (torch.float32, torch.float64, torch.float16):
        out = run(aug, x.to(dtype), torch.arange(5), 5)
        assert out.shape == x.shape and out.dtype == dtype
    u8 = (x * 255).to(torch.uint8)  # integer batches work too (masks and gathers only)
    assert run(aug, u8, torch.arange(5), 5).dtype == torch.uint8


def test_params_shapes_and_device():
    params = make(**ALL).epoch_params(37, seed=1, epoch=2)
    assert set(params) == {"crop", "flip", "cutout"}
    assert params["crop"].shape == (37, 2) and params["crop"].dtype == torch.int64
    assert params["flip"].shape == (37,) and params["flip"].dtype == torch.bool
    assert params["cutout"].shape == (37, 2)
    assert all(v.device.type == "cpu" for v in params.values())
    assert int(params["crop"].min()) >= 0 and int(params["crop"].max()) <= 8
    assert int(params["cutout"].min()) >= 0 and int(params["cutout"].max()) < 16


def test_determinism_same_seed_and_epoch():
    aug, x, idx = make(**ALL), images(20), torch.arange(20)
    a = run(aug, x, idx, 20, seed=3, epoch=5)
    b = run(make(**ALL), x, idx, 20, seed=3, epoch=5)
    assert torch.equal(a, b)
    assert not torch.equal(a, run(aug, x, idx, 20, seed=3, epoch=6))
    assert not torch.equal(a, run(aug, x, idx, 20, seed=4, epoch=5))


def test_independent_of_batch_composition():
    n = 10
    aug, x = make(**ALL), images(n)
    params = aug.epoch_params(n, 7, 1)
    full = aug.apply(x, params)
    pair = torch.tensor([3, 7])
    together = aug.apply(x[pair], {k: v[pair] for k, v in params.items()})
    apart = torch.cat([aug.apply(x[[i]], {k: v[[i]] for k, v in params.items()}) for i in (3, 7)])
    reversed_ = aug.apply(x[[7, 3]], {k: v[[7, 3]] for k, v in params.items()})
    assert torch.equal(together, full[pair])
    assert torch.equal(together, apart)
    assert torch.equal(reversed_, full[[7, 3]])


def test_other_params_unchanged_when_one_augmentation_toggles():
    a = make(crop_padding=4).epoch_params(50, 0, 3)
    b = make(crop_padding=4, flip=True, cutout=4).epoch_params(50, 0, 3)
    assert torch.equal(a["crop"], b["crop"])


def test_crop_moves_marker_within_padding():
    n, p = 200, 3
    x = torch.zeros((n, *SHAPE))
    r0, c0 = 8, 7
    x[:, :, r0, c0] = 1.0
    aug = make(crop_padding=p)
    params = aug.epoch_params(n, 0, 0)
    out = aug.apply(x, params)
    shifts = set()
    for i in range(n):
        pos = torch.nonzero(out[i, 0])
        assert len(pos) == 1  # the marker survives (it is far enough from the border) and is not duplicated
        dr, dc = int(pos[0, 0]) - r0, int(pos[0, 1]) - c0
        assert abs(dr) <= p and abs(dc) <= p
        dy, dx = params["crop"][i].tolist()
        assert (dr, dc) == (p - dy, p - dx)
        assert torch.equal(out[i, 1], out[i, 0]) and torch.equal(out[i, 2], out[i, 0])  # all channels alike
        shifts.add((dr, dc))
    assert len(shifts) > 20  # offsets actually vary


@pytest.mark.parametrize("mode,torch_mode", [("zero", "constant"), ("reflect", "reflect")])
def test_crop_matches_pad_then_slice(mode, torch_mode):
    n, p = 12, 4
    x = images(n, seed=2)
    aug = make(crop_padding=p, padding_mode=mode)
    params = aug.epoch_params(n, 5, 0)
    out = aug.apply(x, params)
    padded = F.pad(x, (p, p, p, p), mode=torch_mode)
    for i in range(n):
        dy, dx = params["crop"][i].tolist()
        assert torch.equal(out[i], padded[i, :, dy:dy + 16, dx:dx + 16])


def test_flip_probability_and_content():
    n = 4000
    aug = make(flip=True)
    params = aug.epoch_params(n, 0, 0)
    rate = params["flip"].float().mean().item()
    assert 0.46 < rate < 0.54
    x = images(64)
    out = aug.apply(x, {"flip": params["flip"][:64]})
    for i in range(64):
        expect = x[i].flip(-1) if params["flip"][i] else x[i]
        assert torch.equal(out[i], expect)
    # different epochs flip different samples
    assert not torch.equal(params["flip"], aug.epoch_params(n, 0, 1)["flip"])


def test_crop_then_flip_order():
    n, p = 16, 2
    x = images(n, seed=4)
    aug = make(crop_padding=p, flip=True)
    params = aug.epoch_params(n, 1, 0)
    out = aug.apply(x, params)
    padded = F.pad(x, (p, p, p, p))
    for i in range(n):
        dy, dx = params["crop"][i].tolist()
        crop = padded[i, :, dy:dy + 16, dx:dx + 16]
        assert torch.equal(out[i], crop.flip(-1) if params["flip"][i] else crop)


@pytest.mark.parametrize("side", [5, 6])
def test_cutout_zeroes_a_clipped_square(side):
    n = 300
    x = torch.ones((n, *SHAPE))
    aug = make(cutout=side)
    params = aug.epoch_params(n, 0, 0)
    out = aug.apply(x, params)
    saw_full = saw_clipped = False
    for i in range(n):
        zero = out[i, 0] == 0
        assert torch.equal(out[i, 1] == 0, zero) and torch.equal(out[i, 2] == 0, zero)
        cy, cx = params["cutout"][i].tolist()
        y0, x0 = cy - side // 2, cx - side // 2
        rows = max(0, min(16, y0 + side) - max(0, y0))
        cols = max(0, min(16, x0 + side) - max(0, x0))
        assert int(zero.sum()) == rows * cols
        pos = torch.nonzero(zero)
        (r_lo, c_lo), (r_hi, c_hi) = pos.min(0).values.tolist(), pos.max(0).values.tolist()
        assert (r_hi - r_lo + 1) * (c_hi - c_lo + 1) == rows * cols  # a solid rectangle
        assert r_lo == max(0, y0) and c_lo == max(0, x0)
        saw_full |= rows * cols == side * side
        saw_clipped |= rows * cols < side * side
    assert saw_full and saw_clipped


def test_all_together_zero_stays_zero_and_values_come_from_input():
    x = images(8)
    out = run(make(**ALL), x, torch.arange(8), 8)
    vals = set(torch.unique(x).tolist()) | {0.0}
    assert set(torch.unique(out).tolist()) <= vals


def test_reflect_padding_too_large_is_a_user_error():
    with pytest.raises(UserError, match="reflect"):
        make(crop_padding=16, padding_mode="reflect")
    make(crop_padding=16)  # zero padding may exceed the image


def test_config_validation_and_key():
    with pytest.raises(pydantic.ValidationError):
        AugmentConfig(crop=4)
    with pytest.raises(pydantic.ValidationError):
        AugmentConfig(cutout=-1)
    k = make(**ALL).key()
    assert k == make(**ALL).key() and k != make(crop_padding=4, flip=True).key()
    assert isinstance(k, str) and "crop_padding" in k


def test_wrong_batch_shape_rejected():
    aug = make(flip=True)
    with pytest.raises(ValueError):
        aug.apply(torch.zeros(2, 3, 8, 8), {"flip": torch.zeros(2, dtype=torch.bool)})


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    aug, x = make(**ALL), images(32)
    params = aug.epoch_params(32, 0, 0)
    cpu = aug.apply(x, params)
    gpu = aug.apply(x.cuda(), {k: v.cuda() for k, v in params.items()})
    assert torch.equal(cpu, gpu.cpu())


def test_pipeline_uses_batch_augment():
    from curridistill.config import DataConfig
    from curridistill.data.pipeline import Pipeline, load_splits

    cfg = DataConfig(name="digits", augment={"crop_padding": 2, "flip": True, "cutout": 3}, normalize=False)
    pipe = Pipeline(load_splits(cfg), cfg, torch.device("cpu"))
    idx = torch.tensor([3, 7, 11])
    x, y = pipe.batch("train", idx, epoch=0)
    assert x.shape == (3, 1, 8, 8) and x.dtype == torch.float32
    x2, _ = pipe.batch("train", idx[[1]], epoch=0)
    assert torch.equal(x2[0], x[1])
    plain, _ = pipe.batch("train", idx)
    assert not torch.equal(plain, x)
