"""Batched, per-sample-deterministic image augmentation on the training device.

Per epoch, ``epoch_params`` draws every training sample's random parameters at once on the CPU from a
generator seeded by a hash of (seed, epoch): sample i's augmentation in epoch e depends only on
(seed, e, i), never on batch size, composition or order. ``apply`` then augments a float batch on its
own device with index arithmetic and masks (no Python loop over samples):

* random crop (``crop_padding`` p): the image is padded by p on each side (zeros, or a mirror
  reflection without repeating the edge) and an H x W window is taken at a random offset in [0, 2p];
  implemented as two ``gather`` calls on computed source indices, so no padded copy is made;
* horizontal flip with probability 0.5 (``flip``), applied after the crop (folded into the column index);
* cutout (DeVries & Taylor 2017) of side ``cutout``: a square centred on a uniformly random pixel is
  set to 0, clipped at the image border (so near a border less than side x side pixels are zeroed).
  Zero here means black in [0, 1] pixel units, as augmentation runs before normalization.

Every draw is made whatever is enabled, so switching one augmentation on or off does not change the
others' parameters. Normalization is not part of this module.
"""
from __future__ import annotations

import hashlib
import json
from typing import Literal

import pydantic
import torch
from torch import Tensor

from curridistill.errors import UserError

PARAMS_VERSION = 1  # bump when the parameter draws change, so caches keyed by key() are invalidated


class AugmentConfig(pydantic.BaseModel, extra="forbid"):
    crop_padding: int = pydantic.Field(0, ge=0)  # random crop with this padding (0 = off)
    padding_mode: Literal["zero", "reflect"] = "zero"
    flip: bool = False  # horizontal flip with prob 0.5
    cutout: int = pydantic.Field(0, ge=0)  # side of a zeroed square (0 = off), DeVries & Taylor 2017


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit generator seed from (seed, epoch); nearby pairs give unrelated streams."""
    digest = hashlib.sha256(f"curridistill-augment:{int(seed)}:{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class BatchAugment:
    """Random crop, horizontal flip and cutout for float (B, C, H, W) batches."""

    def __init__(self, cfg: AugmentConfig, image_shape: tuple[int, int, int]):
        self.cfg = cfg if isinstance(cfg, AugmentConfig) else AugmentConfig.model_validate(cfg)
        if len(image_shape) != 3:
            raise UserError(f"augmentation needs images (C, H, W), got samples of shape {tuple(image_shape)}; "
                            f"remove data.augment for this dataset")
        self.image_shape = tuple(int(s) for s in image_shape)
        _, h, w = self.image_shape
        p = self.cfg.crop_padding
        if self.cfg.padding_mode == "reflect" and p and p >= min(h, w):
            raise UserError(f"data.augment.crop_padding={p} with padding_mode 'reflect' needs images larger than "
                            f"the padding (images are {h}x{w}); use a padding below {min(h, w)} or padding_mode 'zero'")

    @property
    def active(self) -> bool:
        return bool(self.cfg.crop_padding or self.cfg.flip or self.cfg.cutout)

    def key(self) -> str:
        return f"augment-v{PARAMS_VERSION}:" + json.dumps(self.cfg.model_dump(), sort_keys=True, separators=(",", ":"))

    def epoch_params(self, n: int, seed: int, epoch: int) -> dict[str, Tensor]:
        """Per-sample parameters of all ``n`` samples for one epoch (CPU tensors, first dim n)."""
        _, h, w = self.image_shape
        p = self.cfg.crop_padding
        g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        crop = torch.randint(0, 2 * p + 1, (n, 2), generator=g)  # (dy, dx) offset of the window in the padded image
        flip = torch.rand(n, generator=g) < 0.5
        centre = torch.stack([torch.randint(0, h, (n,), generator=g), torch.randint(0, w, (n,), generator=g)], dim=1)
        params: dict[str, Tensor] = {}
        if p:
            params["crop"] = crop
        if self.cfg.flip:
            params["flip"] = flip
        if self.cfg.cutout:
            params["cutout"] = centre
        return params

    def _source(self, idx: Tensor, size: int, valid_needed: bool) -> tuple[Tensor, Tensor | None]:
        """Map window coordinates to source coordinates: reflect them, or clamp them and report validity."""
        if self.cfg.padding_mode == "reflect":
            idx = idx.abs()
            idx = torch.where(idx > size - 1, 2 * (size - 1) - idx, idx)
            return idx, None
        valid = (idx >= 0) & (idx < size) if valid_needed else None
        return idx.clamp(0, size - 1), valid

    def apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Augment a (B, C, H, W) batch; ``params`` are the epoch params of its samples, on ``x.device``."""
        if not self.active:
            return x
        if x.dim() != 4 or tuple(x.shape[2:]) != self.image_shape[1:]:
            raise ValueError(f"expected a batch (B, C, {self.image_shape[1]}, {self.image_shape[2]}), got {tuple(x.shape)}")
        b, c, h, w = x.shape
        for k, v in params.items():
            if v.shape[0] != b:
                raise ValueError(f"augmentation parameter {k!r} has {v.shape[0]} rows for a batch of {b}")
        dev = x.device
        p = self.cfg.crop_padding
        out = x
        mask = None  # True where the output pixel is kept

        if p or self.cfg.flip:
            cols = torch.arange(w, device=dev).expand(b, w)
            if self.cfg.flip:
                cols = torch.where(params["flip"].to(dev).view(b, 1), (w - 1) - cols, cols)
            valid_c = None
            if p:
                rows = torch.arange(h, device=dev).expand(b, h)
                off = params["crop"].to(dev)
                rows, valid_r = self._source(rows + (off[:, :1] - p), h, True)
                cols, valid_c = self._source(cols + (off[:, 1:] - p), w, True)
                out = out.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w))
                if valid_r is not None:
                    mask = valid_r.view(b, 1, h, 1) & valid_c.view(b, 1, 1, w)
            out = out.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))

        if self.cfg.cutout:
            side = self.cfg.cutout
            start = params["cutout"].to(dev) - side // 2  # (B, 2) top-left corner, may lie outside the image
            r = torch.arange(h, device=dev).view(1, h)
            q = torch.arange(w, device=dev).view(1, w)
            in_r = (r >= start[:, :1]) & (r < start[:, :1] + side)
            in_c = (q >= start[:, 1:]) & (q < start[:, 1:] + side)
            keep = ~(in_r.view(b, 1, h, 1) & in_c.view(b, 1, 1, w))
            mask = keep if mask is None else mask & keep

        if mask is not None:
            out = out.masked_fill(~mask, 0)
        return out
