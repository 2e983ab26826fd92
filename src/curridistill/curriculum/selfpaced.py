"""Self-paced learning: per-sample loss weights ``v in [0, 1]`` from the current losses and a threshold.

Each weighting is the closed-form minimiser of an SPL regulariser for a threshold ``lam`` (the "age"),
applied to the per-sample losses of a batch; weights carry no gradient. ``l`` is a sample's loss:

* ``hard`` (Kumar et al. 2010): ``1 if l < lam else 0`` (their ``lam = 1/K``; regulariser ``-lam * sum(v)``)
* ``linear`` (Jiang et al. 2014, also Jiang et al. 2015's self-paced curriculum): ``max(0, 1 - l / lam)``
  (regulariser ``lam * sum(v^2 / 2 - v)``)
* ``logarithmic`` (Jiang et al. 2014): ``log(l + zeta) / log(zeta)`` for ``l < lam``, else 0, with
  ``zeta = 1 - lam``; defined for ``0 < lam < 1`` only, so ``lam`` is clamped into that interval
* ``mixture`` (Jiang et al. 2014): 1 for ``l <= lam'``, 0 for ``l >= lam``, ``zeta / l - zeta / lam`` between,
  with ``lam' = lower * lam`` and ``zeta = lam * lam' / (lam - lam')``
* ``logistic``: ``(1 + exp(-lam)) / (1 + exp(l - lam))``: a soft step, 1 at ``l = 0``, never exactly 0
* ``polynomial``: ``(1 - l / lam)^(1 / (t - 1))`` for ``l < lam``, else 0, with ``t = power > 1``
  (``t = 2`` is linear; larger ``t`` keeps more weight near the threshold); the minimiser of the
  polynomial regulariser ``lam * sum(v^t / t - v)``

In config the threshold is a schedule of lesson progress (see ``schedules.py``), growing so that harder
samples join over time. Kumar et al. multiply ``lam`` by a factor ``mu > 1`` per iteration: with one
iteration per epoch that is ``threshold: {kind: step, start: lam0, gamma: mu, step_size: 1, unit: epoch}``
(``lam0 * mu^e`` in epoch ``e``); ``{kind: exponential, start: lam0, end: lam1}`` grows it geometrically
every step. With ``quantile: true`` the schedule gives a quantile ``q`` of each batch's
losses instead of an absolute loss, which needs no knowledge of the loss scale; ``q >= 1`` weighs
every sample 1 (the curriculum is over)::

    curriculum:
      self_paced: {weighting: linear, threshold: {kind: linear, start: 0.5, end: 5}}
      self_paced: {weighting: hard, quantile: true, threshold: {kind: linear, start: 0.3, end: 1}}
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import Tensor

from curridistill.errors import UserError
from curridistill.registry import Registry
from curridistill.schedules import ScheduleSpec, build_schedule, parse_schedule

WeightFn = Callable[..., Tensor]  # (losses, lam, power=2.0, lower=0.5) -> weights
Threshold = float | Tensor  # a quantile threshold stays a device tensor: reading it would sync the host each step

SELF_PACED: Registry[WeightFn] = Registry("self-paced weighting")
SELF_PACED_HELP: dict[str, str] = {}


def _weighting(name: str, help_text: str):
    def add(fn: WeightFn) -> WeightFn:
        SELF_PACED_HELP[name] = help_text
        return SELF_PACED.register(name)(fn)

    return add


def _losses(losses: Tensor) -> Tensor:
    return losses.detach().float().clamp_min(0.0)


def _lam(lam: Threshold, losses: Tensor) -> Tensor:
    """The threshold as a 0-d float tensor beside the losses, so every weighting is tensor maths only."""
    return torch.as_tensor(lam, dtype=torch.float32, device=losses.device)


def _below_positive(lam: Tensor, weights: Tensor) -> Tensor:
    """``weights`` where lam > 0, else 0 (a threshold of 0 or less lets no sample in)."""
    return torch.where(lam > 0, weights, torch.zeros_like(weights))


@_weighting("hard", "1 if loss < lam else 0 (Kumar et al. 2010)")
def hard(losses: Tensor, lam: Threshold, power: float = 2.0, lower: float = 0.5) -> Tensor:
    return (_losses(losses) < _lam(lam, losses)).float()


@_weighting("linear", "max(0, 1 - loss / lam) (Jiang et al. 2014)")
def linear(losses: Tensor, lam: Threshold, power: float = 2.0, lower: float = 0.5) -> Tensor:
    l, lam = _losses(losses), _lam(lam, losses)
    return _below_positive(lam, (1.0 - l / lam.clamp_min(1e-12)).clamp(0.0, 1.0))


@_weighting("logarithmic", "log(loss + 1 - lam) / log(1 - lam) below lam, else 0; lam clamped into (0, 1) "
            "(Jiang et al. 2014)")
def logarithmic(losses: Tensor, lam: Threshold, power: float = 2.0, lower: float = 0.5) -> Tensor:
    l = _losses(losses)
    lam = _lam(lam, losses).clamp(1e-6, 1.0 - 1e-6)
    zeta = 1.0 - lam
    w = torch.log(l + zeta) / torch.log(zeta)
    return torch.where(l < lam, w, torch.zeros_like(w)).clamp(0.0, 1.0)


@_weighting("mixture", "1 below lower*lam, 0 above lam, zeta/loss - zeta/lam between (Jiang et al. 2014)")
def mixture(losses: Tensor, lam: Threshold, power: float = 2.0, lower: float = 0.5) -> Tensor:
    l, lam = _losses(losses), _lam(lam, losses)
    safe = lam.clamp_min(1e-12)
    lam_low = lower * safe
    zeta = safe * lam_low / (safe - lam_low)
    w = zeta / l.clamp_min(1e-12) - zeta / safe
    w = torch.where(l <= lam_low, torch.ones_like(w), w)
    return _below_positive(lam, torch.where(l >= lam, torch.zeros_like(w), w).clamp(0.0, 1.0))


@_weighting("logistic", "(1 + exp(-lam)) / (1 + exp(loss - lam)): a soft step at lam, never exactly 0")
def logistic(losses: Tensor, lam: Threshold, power: float = 2.0, lower: float = 0.5) -> Tensor:
    l, lam = _losses(losses), _lam(lam, losses)
    # (1 + e^-lam) / (1 + e^(l - lam)) = exp(softplus(-lam) - softplus(l - lam)), stable for any lam
    softplus = torch.nn.functional.softplus
    return torch.exp(softplus(-lam) - softplus(l - lam)).clamp(0.0, 1.0)


@_weighting("polynomial", "(1 - loss / lam)^(1 / (t - 1)) below lam, else 0; t = power > 1")
def polynomial(losses: Tensor, lam: Threshold, power: float = 2.0, lower: float = 0.5) -> Tensor:
    l, lam = _losses(losses), _lam(lam, losses)
    return _below_positive(lam, (1.0 - l / lam.clamp_min(1e-12)).clamp(0.0, 1.0) ** (1.0 / (power - 1.0)))


class SelfPacedSpec(BaseModel):
    """Config of self-paced weighting: which scheme, and the threshold as a schedule of lesson progress."""

    model_config = ConfigDict(extra="forbid")

    weighting: str = "linear"
    threshold: ScheduleSpec = Field(default_factory=lambda: ScheduleSpec(kind="linear", start=0.5, end=5.0))
    quantile: bool = False  # threshold schedule gives a quantile in [0, 1] of the batch losses
    power: float = 2.0  # polynomial: t
    lower: float = 0.5  # mixture: lam' = lower * lam, 0 < lower < 1

    @field_validator("threshold", mode="before")
    @classmethod
    def _parse_threshold(cls, raw: Any) -> Any:
        return parse_schedule(raw, "self_paced.threshold")


def parse_self_paced(raw: Any, where: str = "self_paced") -> SelfPacedSpec:
    if isinstance(raw, SelfPacedSpec):
        return raw
    if isinstance(raw, str):
        raw = {"weighting": raw}
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a weighting name or a mapping like "
                        f"{{weighting: linear, threshold: {{kind: linear, start: 0.5, end: 5}}}}, got {raw!r}")
    try:
        return SelfPacedSpec(**raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err.get("loc", ()))
        raise UserError(f"{where}.{loc}: {err.get('msg')}") from None


class SelfPacedWeights:
    """``weights(losses, progress) -> (B,)`` in [0, 1] without gradient, for a lesson of ``epochs`` epochs."""

    def __init__(self, spec: SelfPacedSpec | str | dict, epochs: float = 1.0, where: str = "self_paced"):
        self.spec = spec = parse_self_paced(spec, where)
        self.fn = SELF_PACED.get(spec.weighting, where=f"{where}.weighting")
        if spec.weighting == "polynomial" and spec.power <= 1:
            raise UserError(f"{where}.power must be > 1 for polynomial weighting, got {spec.power}")
        if spec.weighting == "mixture" and not 0 < spec.lower < 1:
            raise UserError(f"{where}.lower must be in (0, 1) for mixture weighting, got {spec.lower}")
        self.threshold_at: Callable[[float], float] = build_schedule(spec.threshold, epochs, where=f"{where}.threshold")

    def level(self, progress: float) -> float | None:
        """The threshold schedule at ``progress``: an absolute loss threshold, or with ``quantile`` a quantile
        level; None once every sample is in (a quantile >= 1). Host maths only, so a captured training step
        takes it as an input instead of baking each step's value into its graph."""
        value = float(self.threshold_at(progress))
        return None if self.spec.quantile and value >= 1.0 else value

    def threshold(self, losses: Tensor, progress: float) -> Threshold:
        """The absolute loss threshold lam at ``progress`` (inf when every sample is in); a quantile of the
        batch's losses is a 0-d tensor on their device."""
        level = self.level(progress)
        return math.inf if level is None else self._lam(losses, level)

    def _lam(self, losses: Tensor, level: float | Tensor) -> Threshold:
        if not self.spec.quantile:
            return level
        if losses.numel() == 0:
            return 0.0
        flat = losses.detach().float().flatten()
        q = level.clamp_min(0.0).to(flat) if isinstance(level, Tensor) else max(level, 0.0)
        # one float step above the quantile: losses tied at it are in. The weightings keep ``l < lam`` (Kumar et
        # al.), and a batch of tied losses (confident samples' cross-entropy is exactly 0 in float32) would
        # otherwise drop all of them, the easiest first
        return torch.nextafter(torch.quantile(flat, q), flat.new_tensor(math.inf))

    def at_level(self, losses: Tensor, level: float | Tensor | None) -> Tensor:
        """(B,) weights of a batch for a value of ``level`` (a 0-d device tensor inside a captured step)."""
        with torch.no_grad():
            if level is None:
                return torch.ones_like(losses, dtype=torch.float32)
            w = self.fn(losses, self._lam(losses, level), power=self.spec.power, lower=self.spec.lower)
        return w.to(losses.device)

    def __call__(self, losses: Tensor, progress: float) -> Tensor:
        return self.at_level(losses, self.level(progress))
