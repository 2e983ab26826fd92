"""One lesson: epochs of weighted knowledge terms over batches, with its optimizer and LR schedule.

The runner sums named loss terms; terms never step anything. Everything that decides the result
(optimizer, LR schedule, batch order, RNG, best checkpoint, early stopping, term state such as
adapters or a learned temperature) lives in ``state_dict()`` so a resumed lesson continues exactly.
"""
from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from curridistill.config import LessonConfig
from curridistill.train.curriculum import LessonCurriculum
from curridistill.curriculum.sampler import PacedBatches, RandomBatches
from curridistill.errors import NonFiniteLoss, UserError
from curridistill.evaluate.metrics import predict_logits
from curridistill.knowledge import KNOWLEDGE, Clock, KnowledgeInputs, KnowledgeTerm, load_all
from curridistill.models.placement import bf16_autocast
from curridistill.models.taps import FeatureTaps
from curridistill.schedules import build_schedule
from curridistill.train import distributed
from curridistill.train.callbacks import Callbacks
from curridistill.train.captured import CapturedStep, uses_cuda_graphs
from curridistill.train.optim import LRControl, build_optimizer, current_lr
from curridistill.train.teachers import TeacherBank


@dataclass
class LessonContext:
    """What a lesson needs from the course: where it runs and how to report."""

    phase: str  # "teacher", "baseline", "student", ...
    lesson_index: int
    pipeline: object  # data.pipeline.Pipeline
    device: torch.device
    seed: int
    teachers: TeacherBank | None = None
    amp: bool = False
    log: Callable[[dict], None] = lambda record: None
    on_epoch_end: Callable[["LessonRun"], None] = lambda run: None
    callbacks: Callbacks = field(default_factory=Callbacks)  # progress display and other per-batch hooks
    optimizer_state: dict | None = None  # carried over with keep_optimizer
    anchors: dict[str, dict] | None = None  # RCO: teacher checkpoints by name ("epoch_30", "final")
    transfer: object = None  # models.transfer.TransferPlan: freezing over epochs, body/head learning rates
    capture: bool = False  # run.compile=step: the loss and the optimizer update run as compiled graphs
    micro_batches: int = 1  # run.micro_batches: forward + backward per part of the batch, one optimizer step


@dataclass
class Best:
    value: float = -math.inf
    epoch: int = -1
    state: dict | None = None  # model state_dict (CPU copy) at the best epoch


class RouteFollower:
    """RCO: load the teacher anchor that the lesson's progress calls for (equal parts by default)."""

    def __init__(self, route, anchors: dict[str, dict] | None, teachers: TeacherBank | None):
        missing = [a for a in route.route if not anchors or a not in anchors]
        if teachers is None or missing:
            have = sorted(anchors) if anchors else []
            raise UserError(f"teacher route {route.route}: anchors {missing} do not exist (saved: {have}); "
                            f"list their epochs in teacher.keep_epochs and let the tool train the teacher")
        k = len(route.route)
        self.switch = route.switch_at if route.switch_at is not None else [i / k for i in range(1, k)]
        if len(self.switch) != k - 1:
            raise UserError(f"teacher route has {k} anchors but switch_at has {len(self.switch)} entries; give {k - 1}")
        self.route, self.anchors, self.teachers = route.route, anchors, teachers
        self.current: str | None = None

    def at(self, progress: float) -> None:
        name = self.route[sum(1 for s in self.switch if progress >= s - 1e-9)]
        if name != self.current:
            self.teachers.load_teacher_state(0, self.anchors[name])
            self.current = name


class LessonRun:
    def __init__(self, model: nn.Module, lesson: LessonConfig, ctx: LessonContext):
        load_all()
        self.model, self.lesson, self.ctx = model, lesson, ctx
        data = ctx.pipeline
        self.batch_size = lesson.batch_size or data.cfg.batch_size
        n_train = len(data.splits.train)
        if self.batch_size > n_train:
            raise UserError(f"batch size {self.batch_size} is larger than the {n_train} training samples; lower data.batch_size")
        sampler_seed = data.cfg.data_seed + 7919 * ctx.lesson_index
        drop_last = n_train % self.batch_size == 1  # a batch of 1 breaks BatchNorm
        self.curriculum = (LessonCurriculum(lesson.curriculum, lesson.epochs, where=f"course.{ctx.lesson_index}.curriculum")
                           if lesson.curriculum is not None else None)
        steps = RandomBatches(n_train, self.batch_size, seed=sampler_seed, drop_last=drop_last).steps_per_epoch()
        self.sampler = (self.curriculum.make_sampler(n_train, self.batch_size, steps, sampler_seed, drop_last)
                        if self.curriculum else RandomBatches(n_train, self.batch_size, seed=sampler_seed, drop_last=drop_last))
        self.steps_per_epoch = self.sampler.steps_per_epoch()
        self.route = RouteFollower(lesson.teacher, ctx.anchors, ctx.teachers) if lesson.teacher is not None else None
        self.total_steps = self.steps_per_epoch * lesson.epochs
        self.terms = nn.ModuleDict()
        self.weights: dict[str, Callable[[float], float]] = {}
        self.temps: dict[str, Callable[[float], float] | None] = {}
        for name, term_cfg in lesson.loss.items():
            cls = KNOWLEDGE.get(term_cfg.kind, where=f"loss.{name}")
            if cls.uses_teacher and (ctx.teachers is None or len(ctx.teachers) == 0):
                raise UserError(f"lesson {ctx.lesson_index} of {ctx.phase}: term {name!r} needs a teacher but none is "
                                f"configured; add a 'teacher' section or remove the term")
            if ctx.teachers is not None and cls.uses_teacher and term_cfg.teacher >= len(ctx.teachers):
                raise UserError(f"loss.{name}.teacher={term_cfg.teacher} but only {len(ctx.teachers)} teacher(s) exist")
            self.terms[name] = cls(cls.Params(**term_cfg.params), teacher_index=term_cfg.teacher)
            self.terms[name].attach_training_labels(data.splits.train.y)
            self.weights[name] = build_schedule(term_cfg.weight, lesson.epochs, where=f"loss.{name}.weight")
            self.temps[name] = (build_schedule(term_cfg.temperature, lesson.epochs, where=f"loss.{name}.temperature")
                                if term_cfg.temperature is not None else None)
        self.terms.to(ctx.device)
        self.student_paths = sorted({p for t in self.terms.values() for p in t.feature_paths()["student"]})
        if ctx.teachers is not None:
            ctx.teachers.set_paths(self.teacher_paths())  # before _build_terms: adapters need teacher shapes
        self._build_terms()
        params = (ctx.transfer.param_groups(lesson.optimizer.lr) + [{"params": list(self.terms.parameters())}]
                  if ctx.transfer is not None else list(model.parameters()) + list(self.terms.parameters()))
        self.optimizer = build_optimizer(params, lesson.optimizer)
        if lesson.keep_optimizer and ctx.optimizer_state is not None:
            try:
                self.optimizer.load_state_dict(ctx.optimizer_state)
            except (ValueError, KeyError):
                pass  # a different optimizer or parameter set: start fresh, as without keep_optimizer
        self.captured = (CapturedStep(self.weighted_loss, self.optimizer, ctx.device, uses_cuda_graphs(self.terms.values()))
                         if ctx.capture else None)  # before LRControl: tensor LRs
        self.lr = LRControl(self.optimizer, lesson, self.total_steps)
        self.forward_model = model  # DDP wraps it when several processes train together (taps stay on model)
        if distributed.info().active:
            from torch.nn.parallel import DistributedDataParallel

            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.forward_model = DistributedDataParallel(model, device_ids=ids)
        # A per-step finiteness check reads the loss on the host: free on the CPU, a stall per step on a GPU.
        # On a single GPU the epoch's loss sum is checked instead (the epoch is not checkpointed when it is
        # non-finite, so the last good checkpoint is kept); DDP keeps the per-step check, whose all-reduce
        # keeps every rank deciding together.
        self._check_every_step = ctx.device.type == "cpu" or distributed.info().active
        self.epoch = 0  # next epoch to run
        self.best = Best()
        self.stale_epochs = 0
        self.early_best = -math.inf
        self.stopped_early = False

    # ------------------------------------------------------------------ set-up
    def teacher_paths(self) -> list[list[str]]:
        n = len(self.ctx.teachers) if self.ctx.teachers is not None else 0
        paths: list[set[str]] = [set() for _ in range(n)]
        for t in self.terms.values():
            for p in t.feature_paths()["teacher"]:
                paths[t.teacher_index].add(p)
        return [sorted(p) for p in paths]

    def _build_terms(self) -> None:
        """Run every term's ``build`` on a fixed probe batch, so adapters exist before the optimizer."""
        builders = [t for t in self.terms.values() if t.needs_build()]
        if not self.student_paths and not builders:
            return
        data = self.ctx.pipeline
        idx = torch.arange(min(self.batch_size, len(data.splits.train)))
        x, y = data.batch("train", idx)
        was_training = self.model.training
        self.model.eval()
        # the teachers only when a build reads them: with a teacher cache, their un-augmented outputs are a whole
        # pass over the training set
        teachers = any(t.build_reads_teacher for t in builders)
        with torch.no_grad(), FeatureTaps(self.model, self.student_paths, who="student") as taps:
            logits = self.model(x)
            out = self._teacher_outputs(x, y, idx, None) if teachers else None
            inputs = self._knowledge_inputs(logits, y, taps.features, idx, Clock(), out)
            for term in self.terms.values():
                term.build(inputs)
        self.terms.to(self.ctx.device)
        self.model.train(was_training)

    def _inputs(self, logits: Tensor, y: Tensor, student_features: dict, x: Tensor, idx: Tensor, clock: Clock,
                epoch: int | None) -> KnowledgeInputs:
        """``epoch`` is the augmentation epoch of ``x`` (None: un-augmented), so a cache can serve the teacher."""
        return self._knowledge_inputs(logits, y, student_features, idx, clock, self._teacher_outputs(x, y, idx, epoch))

    def _teacher_outputs(self, x: Tensor, y: Tensor, idx: Tensor, epoch: int | None):
        teachers = self.ctx.teachers
        return teachers(x, y, indices=idx, epoch=epoch) if teachers is not None and len(teachers) else None

    @staticmethod
    def _knowledge_inputs(logits: Tensor, y: Tensor, student_features: dict, idx: Tensor, clock: Clock,
                          out) -> KnowledgeInputs:
        return KnowledgeInputs(
            student_logits=logits, targets=y,
            teacher_logits=out.logits if out else None, teachers_logits=out.each if out else [],
            student_features=dict(student_features), teacher_features=out.features if out else [],
            indices=idx.to(logits.device), clock=clock)

    # ------------------------------------------------------------------ training
    def run(self) -> "LessonRun":
        model, ctx = self.model, self.ctx
        with FeatureTaps(model, self.student_paths, who="student") as taps:
            while self.epoch < self.lesson.epochs and not self.stopped_early:
                record = self._train_epoch(taps)
                self._end_epoch(record)
        return self

    def _train_epoch(self, taps: FeatureTaps) -> dict:
        model, ctx, lesson = self.model, self.ctx, self.lesson
        epoch = self.epoch
        model.train()
        self.terms.train()
        t0 = time.perf_counter()
        start_p = epoch / lesson.epochs
        if ctx.transfer is not None:  # gradual unfreezing: what is frozen depends only on (lesson, epoch)
            ctx.transfer.at(ctx.lesson_index, epoch)
        if self.route is not None:
            self.route.at(start_p)
        if self.curriculum is not None and self.curriculum.needs_rescore(epoch):
            self.curriculum.rescore(epoch, model, ctx.pipeline, ctx.teachers, self.sampler)
            model.train()
        record = {
            "model": ctx.phase, "lesson": ctx.lesson_index, "lesson_name": lesson.name or f"lesson{ctx.lesson_index}",
            "epoch": epoch, "epochs": lesson.epochs, "lr": current_lr(self.optimizer),
            "weights": {n: w(start_p) for n, w in self.weights.items()},
            "temperature": next((t(start_p) for t in self.temps.values() if t is not None), None),
            "data_fraction": (self.sampler.fraction(epoch * self.steps_per_epoch)
                              if isinstance(self.sampler, PacedBatches) else 1.0),
        }
        if self.route is not None:
            record["teacher_anchor"] = self.route.current
        sums: dict[str, Tensor] = {}
        total_sum = torch.zeros((), device=ctx.device)
        correct = torch.zeros((), device=ctx.device)
        weight_sum = torch.zeros((), device=ctx.device)
        seen = 0
        ctx.callbacks.on_batches_start(self.steps_per_epoch)
        batches = (distributed.shard(idx) for idx in self.sampler.epoch_batches(epoch))
        for k, (idx, x, y) in enumerate(ctx.pipeline.train_batches(batches, epoch, augment=lesson.augment)):
            idx = _on_device(idx, x.device)  # once per step, so terms and the teacher cache index on the device
            step = epoch * self.steps_per_epoch + k
            clock = Clock(progress=step / self.total_steps, epoch=epoch, epochs=lesson.epochs, step=step)
            loss, parts, logits, sample_weight = self.step(x, y, idx, clock, taps)
            if sample_weight is not None:
                weight_sum += sample_weight * len(idx)
            total_sum += loss.detach() * len(idx)
            for name, value in parts.items():
                sums[name] = sums.get(name, torch.zeros((), device=ctx.device)) + value * len(idx)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(idx)
            ctx.callbacks.on_batch()
        ctx.callbacks.on_batches_end()
        if distributed.info().active:  # epoch metrics over every rank's samples
            term_sums = [t for term in self.terms.values() for t in term.epoch_sums()]
            for t in [total_sum, correct, weight_sum, *sums.values(), *term_sums]:
                distributed.all_reduce_sum(t)
            seen = int(distributed.all_reduce_sum(torch.tensor(float(seen), device=ctx.device)).item())
        train_loss = float(total_sum) / max(seen, 1)
        if not math.isfinite(train_loss):
            self._non_finite(epoch, -1, {n: float(v) / max(seen, 1) for n, v in sums.items()})
        record["train_loss"] = train_loss
        record["losses"] = {n: float(v) / max(seen, 1) for n, v in sums.items()}
        record["train_accuracy"] = float(correct) / max(seen, 1)
        record["steps"] = self.steps_per_epoch  # optimizer steps this epoch (the same under DDP)
        if self.curriculum is not None and self.curriculum.weights is not None:
            record["mean_sample_weight"] = float(weight_sum) / max(seen, 1)
        learned = {n: value for n, value in ((n, t.learned_temperature()) for n, t in self.terms.items())
                   if value is not None}  # called once per term: CTKD's reading also resets its epoch mean
        if learned:
            record["temperature"] = next(iter(learned.values()))
            record["learned_temperatures"] = learned
        record["train_seconds"] = time.perf_counter() - t0
        return record

    def step(self, x: Tensor, y: Tensor, idx: Tensor, clock: Clock, taps: FeatureTaps):
        """One optimizer step on batch (x, y) with sample indices idx: the weighted terms, self-paced
        weights, backward, clipping and the LR schedule. Returns (loss, per-term means, logits, mean sample
        weight or None); the loss and parts stay on the device (no host sync)."""
        # everything that follows the clock is computed here, on the host; the loss itself never reads the clock
        weights = {n: w(clock.progress) for n, w in self.weights.items()}
        temps = {n: (t(clock.progress) if t is not None else None) for n, t in self.temps.items()}
        active = frozenset(n for n, w in weights.items() if w != 0.0)  # decided here, so a graph never branches on it
        level = self.curriculum.self_paced_level(clock.progress) if self.curriculum else None
        for term in self.terms.values():
            term.before_step(clock)
        teacher_epoch = clock.epoch if self.lesson.augment else None
        parts_of_batch = micro_batches(len(y), self.ctx.micro_batches)
        if len(parts_of_batch) > 1:  # run.micro_batches (config checks: not captured, not lbfgs)
            state = {}
            self.optimizer.zero_grad(set_to_none=True)
            self._accumulate(x, y, idx, clock, taps, (weights, temps, active, level), teacher_epoch, parts_of_batch, state)
            self._finish_backward()
            self.optimizer.step()
            self.lr.after_step()
            return state["loss"], state["parts"], state["logits"], state.get("sample_weight")
        # the teacher's outputs on this batch's inputs: those of its augmentation epoch, or un-augmented
        teacher_out = self._teacher_outputs(x, y, idx, teacher_epoch)
        loss_fn = self.weighted_loss
        if self.captured is not None:  # the varying scalars as device tensors: no recompile, nothing baked in
            loss_fn = self.captured.loss
            weights, temps = self.captured.held("weight", weights), self.captured.held("temperature", temps)
            level = self.captured.held("self_paced", {"level": level})["level"]
        state: dict = {}

        def compute() -> Tensor:
            total, parts, logits, sample_weight = loss_fn(x, y, idx, clock, taps, weights, temps, teacher_out, active,
                                                          level)
            if self.lesson.optimizer.name == "lbfgs" and self.lesson.optimizer.weight_decay:
                total = total + 0.5 * self.lesson.optimizer.weight_decay * sum((p * p).sum() for p in self.model.parameters())
            state.update(loss=total, parts=parts, logits=logits)
            if sample_weight is not None:
                state["sample_weight"] = sample_weight
            return total

        def closure() -> Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            total = compute()
            if self._check_every_step and not distributed.all_finite(total):
                self._non_finite(clock.epoch, clock.step, {n: float(v) for n, v in state["parts"].items()})
            if total.requires_grad:  # every weight 0 at this step (a warm-up from 0): nothing to learn from
                total.backward()
            self._finish_backward()
            return total

        if self.lesson.optimizer.name == "lbfgs":
            self.optimizer.step(closure)
        else:
            closure()
            if self.captured is not None:
                self.captured.update()
            else:
                self.optimizer.step()
        self.lr.after_step()
        return state["loss"], state["parts"], state["logits"], state.get("sample_weight")

    def _finish_backward(self) -> None:
        """After the backward of a step: the knowledge terms' gradients averaged over DDP ranks, then clipping."""
        distributed.average_gradients(self.terms.parameters())
        if self.lesson.grad_clip:
            nn.utils.clip_grad_norm_(list(self.model.parameters()) + list(self.terms.parameters()), self.lesson.grad_clip)

    def _accumulate(self, x: Tensor, y: Tensor, idx: Tensor, clock: Clock, taps: FeatureTaps, loss_args: tuple,
                    teacher_epoch: int | None, parts_of_batch: list[slice], state: dict) -> None:
        """Forward + backward per micro-batch, leaving the gradients of the whole batch's loss.

        The batch's loss is ``sum(v_i * l_i) / sum(v_i)`` (v: self-paced weights, or 1), so a part enters with its
        weight sum ``m``: the parts before the last go back as ``m * loss_part`` (the sum of their weighted
        losses), and once the last part's forward gives the total weight ``M``, those gradients are divided by it
        and the last part goes back as ``m * loss_part / M``. Under DDP only that last backward all-reduces
        (``no_sync``). Batch-relational terms (rkd, sp, pkt, dist's intra part), CRD's queue, self-paced quantile
        thresholds and BatchNorm statistics see the micro-batch."""
        weights, temps, active, level = loss_args
        params = [p for p in (*self.model.parameters(), *self.terms.parameters()) if p.requires_grad]
        mass, seen = None, []  # running weight sum (a device tensor with self-paced weights); (loss, m, parts, logits)
        for k, part in enumerate(parts_of_batch):
            last = k == len(parts_of_batch) - 1
            xs, ys, ids = x[part], y[part], idx[part]
            quiet = self.forward_model.no_sync() if not last and self.forward_model is not self.model else nullcontext()
            with quiet:
                total, parts, logits, sample_weight = self.weighted_loss(
                    xs, ys, ids, clock, taps, weights, temps, self._teacher_outputs(xs, ys, ids, teacher_epoch), active,
                    level)
                if self._check_every_step and not distributed.all_finite(total):
                    self._non_finite(clock.epoch, clock.step, {n: float(v) for n, v in parts.items()})
                m = sample_weight * len(ys) if sample_weight is not None else float(len(ys))
                mass = m if mass is None else mass + m
                if last:
                    grads = [p.grad for p in params if p.grad is not None]
                    if grads:
                        torch._foreach_div_(grads, mass)
                if total.requires_grad:  # every weight 0 at this step: nothing to learn from
                    (total * (m / mass if last else m)).backward()
            seen.append((total.detach(), m, parts, logits.detach(), len(ys)))
        n = len(y)
        state["loss"] = sum(t * m for t, m, *_ in seen) / mass
        state["parts"] = {name: sum(p[name] * size for _, _, p, _, size in seen) / n for name in seen[0][2]}
        state["logits"] = torch.cat([lg for *_, lg, _ in seen])
        if isinstance(mass, Tensor):
            state["sample_weight"] = mass / n

    def weighted_loss(self, x: Tensor, y: Tensor, idx: Tensor, clock: Clock, taps: FeatureTaps,
                      weights: dict[str, float | Tensor], temps: dict[str, float | Tensor | None], teacher_out,
                      active: frozenset[str], self_paced_level: float | Tensor | None = None):
        """Student forward and the weighted sum of the terms: (loss, per-term means, logits, mean sample weight
        or None). The part of a step that ``run.compile=step`` compiles, so it takes everything as arguments
        (``clock`` only rides along in the terms' inputs: what follows it was computed before, on the host)."""
        sample_weight = None
        with bf16_autocast(x.device, self.ctx.amp):  # decides where autocast applies (placement.uses_amp)
            logits = self.forward_model(x)
            inputs = self._knowledge_inputs(logits, y, taps.features, idx, clock, teacher_out)
            per_sample = torch.zeros(len(y), device=x.device)  # (B,) weighted sum of the terms
            parts = {}
            for name, term in self.terms.items():
                value = term(inputs, temps[name]).float()
                parts[name] = value.detach().mean()
                if name in active:
                    per_sample = per_sample + weights[name] * value
            v = self.curriculum.sample_weights(per_sample, self_paced_level) if self.curriculum else None
            if v is None:
                total = per_sample.mean()
            else:  # self-paced: a weighted mean keeps the gradient scale of the unweighted loss
                total = (v * per_sample).sum() / v.sum().clamp_min(1e-8)
                sample_weight = v.mean()
        return total, parts, logits, sample_weight

    def _non_finite(self, epoch: int, step: int, parts: dict[str, float]) -> None:
        terms = ", ".join(f"{n}={v:.4g}" for n, v in parts.items())
        where = f"{self.ctx.phase}, lesson {self.ctx.lesson_index}, epoch {epoch}" + (f", step {step}" if step >= 0 else "")
        raise NonFiniteLoss(f"non-finite loss in {where} (terms: {terms}); the last good checkpoint is kept; "
                            f"lower the learning rate, set grad_clip, or check the data")

    def _end_epoch(self, record: dict) -> None:
        ctx = self.ctx
        distributed.sync_buffers(self.model)
        logits = predict_logits(self.model, ctx.pipeline, "val", amp=ctx.amp)
        y = ctx.pipeline.splits.val.y
        record["val_accuracy"] = float((logits.argmax(1) == y).double().mean())
        record["val_loss"] = float(nn.functional.cross_entropy(logits, y))
        metrics = {"val_accuracy": record["val_accuracy"], "val_loss": record["val_loss"]}
        self.lr.after_epoch(metrics)
        if record["val_accuracy"] > self.best.value:
            self.best = Best(record["val_accuracy"], self.epoch,
                             {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()})
        es = self.lesson.early_stop
        if es.patience > 0:
            value = metrics[es.metric] if es.mode == "max" else -metrics[es.metric]
            if value > self.early_best + es.min_delta:
                self.early_best, self.stale_epochs = value, 0
            else:
                self.stale_epochs += 1
                self.stopped_early = self.stale_epochs >= es.patience
        record["seconds"] = record.pop("train_seconds")
        record["epoch_seconds"] = record["seconds"]
        self.epoch += 1
        ctx.log(record)
        ctx.on_epoch_end(self)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "optimizer": self.optimizer.state_dict(),
            "lr": self.lr.state_dict(),
            "sampler": self.sampler.state_dict(),
            "terms": self.terms.state_dict(),
            "curriculum": self.curriculum.state_dict() if self.curriculum else {},
            "best_value": self.best.value, "best_epoch": self.best.epoch,
            "stale_epochs": self.stale_epochs, "early_best": self.early_best, "stopped_early": self.stopped_early,
            "rng": torch.get_rng_state(),
            "cuda_rng": cuda_rng_state(self.ctx.device),
        }

    def load_state_dict(self, state: dict, best_state: dict | None) -> None:
        self.epoch = int(state["epoch"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.captured is not None:  # a checkpoint of an eager run holds float LRs
            self.captured.tensor_lrs()
        self.lr.load_state_dict(state["lr"])
        self.sampler.load_state_dict(state["sampler"])
        self.terms.load_state_dict(state["terms"])
        if self.curriculum is not None:
            self.curriculum.load_state_dict(state["curriculum"])
        self.best = Best(float(state["best_value"]), int(state["best_epoch"]), best_state)
        self.stale_epochs, self.early_best = int(state["stale_epochs"]), float(state["early_best"])
        self.stopped_early = bool(state["stopped_early"])
        torch.set_rng_state(state["rng"])
        restore_cuda_rng(state.get("cuda_rng"), self.ctx.device)

    def carried_optimizer_state(self) -> dict:
        return copy.deepcopy(self.optimizer.state_dict())


def micro_batches(n: int, count: int) -> list[slice]:
    """``count`` slices of a batch of ``n`` as equal as can be, each of at least 2 samples (BatchNorm in training
    needs 2): fewer parts for a small batch (an epoch's last), the whole batch when ``count`` is 1."""
    parts = max(1, min(count, n // 2))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(parts)]


def cuda_rng_state(device: torch.device) -> Tensor | None:
    """The random state of the GPU this run trains on (None off CUDA). Only that one: a checkpoint must
    resume on a machine with another number of GPUs (or under CUDA_VISIBLE_DEVICES)."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def restore_cuda_rng(state, device: torch.device) -> None:
    """Put back ``cuda_rng_state``'s value. Checkpoints written before held one state per visible GPU:
    the training device's entry is used (device 0 when that list is shorter). A CPU run ignores it."""
    if device.type != "cuda" or state is None or (isinstance(state, list) and not state):
        return
    if isinstance(state, list):
        state = state[device.index or 0] if (device.index or 0) < len(state) else state[0]
    torch.cuda.set_rng_state(state, device)


def _on_device(indices: Tensor, device: torch.device) -> Tensor:
    """Sample indices on ``device``; from pinned memory so the copy does not stall the host (CUDA)."""
    if indices.device == device:
        return indices
    if device.type == "cuda":
        indices = indices.pin_memory()
    return indices.to(device, non_blocking=True)
