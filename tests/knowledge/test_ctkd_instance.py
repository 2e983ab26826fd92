"""CTKD's instance-wise temperature (``ctkd`` with ``mode: instance``): the per-sample loss, the gradient reversal
into the temperature module, its BatchNorm edge cases, its state, and a resumed run through the CLI."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from pydantic import ValidationError
from safetensors.torch import load_file

from curridistill.knowledge import Clock, KnowledgeInputs, KnowledgeTerm, load_all
from curridistill.knowledge.ctkd import CTKD, CTKDParams, TemperatureMLP, grl_lambda
from tests.helpers import one_error, run_main, tiny_config

B, C = 5, 7
EPOCH = 4  # 0-based: lambda = grl_lambda(5, 10) = -0.5, half-way up the ramp


def logits(b: int = B, c: int = C, seed: int = 0, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, c, generator=g), scale * torch.randn(b, c, generator=g)


def inputs_of(s: torch.Tensor, t: torch.Tensor, epoch: int = EPOCH) -> KnowledgeInputs:
    return KnowledgeInputs(student_logits=s, targets=torch.zeros(len(s), dtype=torch.long, device=s.device),
                           teacher_logits=t, clock=Clock(progress=0.5, epoch=epoch, epochs=20))


def instance_term(s: torch.Tensor, t: torch.Tensor, seed: int = 0, **options) -> CTKD:
    """Made as the runner makes it: from the registry with its options, then ``build`` on a probe batch."""
    torch.manual_seed(seed)
    cls = load_all().get("ctkd")
    term = cls(cls.Params(mode="instance", **options))
    with torch.no_grad():
        term.build(inputs_of(s, t))
    return term.train()


def hand_kd_rows(s: torch.Tensor, t: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """The per-sample formula written out again, row by row: tau_i^2 KL(softmax(t_i/tau_i) || softmax(s_i/tau_i))."""
    rows = []
    for i in range(len(s)):
        T = tau[i]
        kl = F.kl_div(F.log_softmax(s[i:i + 1] / T, dim=1), F.softmax(t[i:i + 1] / T, dim=1), reduction="sum")
        rows.append(T * T * kl)
    return torch.stack(rows)


def hand_mlp(net: TemperatureMLP, x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mlp_T in training mode by hand: BN(2C) -> Linear(2C, C) -> LeakyReLU(0.2) -> BN(C) -> Linear(C, 1), (B,)."""
    def bn(h, layer):
        return (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + eps) * layer.weight + layer.bias

    bn1, lin1, _, bn2, lin2 = net
    h = bn(x, bn1) @ lin1.weight.T + lin1.bias
    h = torch.where(h > 0, h, 0.2 * h)
    return (bn(h, bn2) @ lin2.weight.T + lin2.bias).squeeze(1)


# ------------------------------------------------------------------------------------------ options and classes
def test_mode_option_defaults_to_global_and_takes_only_the_two_modes():
    assert CTKDParams().mode == "global"
    assert CTKDParams(mode="instance").mode == "instance"
    with pytest.raises(ValidationError, match="global"):
        CTKDParams(mode="sample")
    term = load_all().get("ctkd")(CTKDParams(mode="instance"))
    assert not hasattr(term, "theta")  # init and theta belong to the global mode
    # the runner runs its probe batch only when a term needs it: the instance mode's module is made there; the
    # global mode keeps its runs (and their teacher cache) as they were
    assert term.needs_build() and not CTKD().needs_build()


@pytest.mark.parametrize("options, expect", [
    ({"mode": "sample"}, ["option 'mode' of term 'ctkd'", "'global' or 'instance'"]),
    ({"mode": "instance", "init": 2.0}, ["init sets the global mode's one temperature parameter", "remove init"]),
], ids=["unknown mode", "init with mode instance"])
def test_bad_options_are_one_line(tmp_path, capsys, options, expect):
    raw = tiny_config(tmp_path)
    raw["course"][0]["loss"] = {"ce": 0.1, "ctkd": {"weight": 0.9, **options}}
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(raw))
    line = one_error(*run_main(["validate", str(config)], capsys))
    assert all(text in line for text in expect), line


def test_forward_before_build_says_what_to_do():
    s, t = logits()
    term = CTKD(CTKDParams(mode="instance"))
    with pytest.raises(RuntimeError, match=r"build\(inputs\) must run before the first forward"):
        term(inputs_of(s, t))


def test_build_sizes_the_module_from_the_logits():
    s, t = logits(c=11)
    net = instance_term(s, t).temperature_net
    kinds = [type(m) for m in net]
    assert kinds == [torch.nn.BatchNorm1d, torch.nn.Linear, torch.nn.LeakyReLU, torch.nn.BatchNorm1d, torch.nn.Linear]
    assert (net[1].in_features, net[1].out_features, net[3].num_features, net[4].out_features) == (22, 11, 11, 1)
    assert net[0].num_features == 22 and net[2].negative_slope == 0.2


# ------------------------------------------------------------------------------------------ 1. equal temperatures
def test_equal_temperatures_give_the_global_loss_and_gradients():
    """Last layer's weight 0, bias b: every tau_i = t_min + t_range sigmoid(b), the global tau at theta = b."""
    s, t = logits()
    b = 0.3
    inst = instance_term(s, t, t_min=2.0, t_range=10.0)
    with torch.no_grad():
        inst.temperature_net[-1].weight.zero_()
        inst.temperature_net[-1].bias.fill_(b)
    glob = CTKD(CTKDParams(t_min=2.0, t_range=10.0, init=b)).train()
    results = []
    for term in (inst, glob):
        ss = s.clone().requires_grad_(True)
        loss = term(inputs_of(ss, t))
        loss.mean().backward()
        results.append((loss.detach(), ss.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=1e-6)
    # the temperature's own (reversed) gradient too: the bias plays theta's part
    torch.testing.assert_close(inst.temperature_net[-1].bias.grad, glob.theta.grad, rtol=1e-5, atol=1e-7)
    assert inst.learned_temperature() == pytest.approx(2.0 + 10.0 * torch.sigmoid(torch.tensor(b)).item(), rel=1e-6)


# ------------------------------------------------------------------------------------------ 2. per-sample formula
def test_loss_is_the_hand_written_per_sample_formula():
    s, t = (x.double() for x in logits(seed=1))  # float64: float32 rounding times tau^2 ~ 100 is ~1e-5
    term = instance_term(s, t, seed=1).double()
    net = copy.deepcopy(term.temperature_net)
    with torch.no_grad():
        loss = term(inputs_of(s, t))
        tau = 1.0 + 20.0 * torch.sigmoid(hand_mlp(net, torch.cat([t, s], dim=1)))
    assert loss.shape == (B,) and loss.dtype == torch.float64
    assert float(tau.std()) > 0.1  # really one temperature per sample
    assert ((tau > 1.0) & (tau < 21.0)).all()
    torch.testing.assert_close(loss, hand_kd_rows(s, t, tau), rtol=0, atol=1e-10)
    torch.testing.assert_close(term.temperatures(s, t), tau, rtol=0, atol=1e-10)


# ------------------------------------------------------------------------------------------ 3. gradient reversal
def test_the_module_ascends_the_loss_through_the_grl_and_its_inputs_get_no_gradient():
    s0, t0 = (x.double() for x in logits(seed=2))  # float64: some of these gradients are ~0 (a bias before a BN)
    term = instance_term(s0, t0, seed=2).double()
    reference = copy.deepcopy(term.temperature_net)  # before the forward updates the running statistics
    s, t = s0.clone().requires_grad_(True), t0.clone().requires_grad_(True)
    term(inputs_of(s, t)).mean().backward()
    lam = grl_lambda(EPOCH + 1, 10.0)
    assert lam == pytest.approx(-0.5)

    # the same computation without a GRL, the module reading detached copies of the logits
    params = list(reference.parameters())
    s2, t2 = s0.clone().requires_grad_(True), t0.clone().requires_grad_(True)
    tau = 1.0 + 20.0 * torch.sigmoid(reference(torch.cat([t2, s2], dim=1).detach()).squeeze(1))
    true_loss = hand_kd_rows(s2, t2, tau).mean()
    *d_params, d_s, d_t = torch.autograd.grad(true_loss, params + [s2, t2])
    for p, d in zip(term.temperature_net.parameters(), d_params):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, lam * d, rtol=1e-7, atol=1e-10)
    assert float(term.temperature_net[-1].weight.grad.abs().sum()) > 1e-3  # a real push, not 0 == 0
    # the logits' gradients are those of the KD loss at fixed temperatures: nothing from the module's path
    torch.testing.assert_close(s.grad, d_s, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(t.grad, d_t, rtol=1e-7, atol=1e-10)
    # and the module's own path, taken alone, gives the logits nothing
    x_s, x_t = s0.clone().requires_grad_(True), t0.clone().requires_grad_(True)
    tau_only = term.temperatures(x_s, x_t).sum()
    assert not tau_only.requires_grad or all(
        g is None for g in torch.autograd.grad(tau_only, [x_s, x_t], allow_unused=True))


def test_a_step_raises_the_kd_loss_through_the_temperatures_after_the_ramp():
    """lambda = -1: one SGD step of the module alone makes the same batch's KD loss larger."""
    s, t = logits(b=16, c=10, seed=3)
    term = instance_term(s, t, seed=3)
    opt = torch.optim.SGD(term.parameters(), lr=0.1)
    inputs = inputs_of(s, t, epoch=20)
    before = term(inputs).mean()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = term(inputs).mean()
    assert after > before.detach()


# ------------------------------------------------------------------------------------------ 5. device and dtype
def test_bf16_inputs_give_a_float32_finite_loss():
    """What the contract suite checks for every term, in instance mode (its make_setup builds default options)."""
    s, t = logits(b=16, c=10, seed=4, scale=8.0)
    term = instance_term(s, t, seed=4)
    s16, t16 = s.bfloat16().requires_grad_(True), t.bfloat16()
    half = term(inputs_of(s16, t16))
    assert half.dtype == torch.float32 and half.shape == (16,) and torch.isfinite(half).all()
    half.mean().backward()
    assert s16.grad is not None and torch.isfinite(s16.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in term.parameters())
    full = term(inputs_of(s16.detach().float(), t16.float()))
    torch.testing.assert_close(half.detach(), full.detach())


def test_the_module_runs_outside_bf16_autocast():
    s, t = logits(b=16, c=10, seed=5)
    term = instance_term(s, t, seed=5)
    with torch.no_grad():
        plain = term.temperatures(s, t)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            under = term.temperatures(s, t)
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, plain, rtol=0, atol=1e-6)


def test_runs_on_the_meta_device_without_host_reads():
    """Shapes only: a tensor made on the CPU or a ``.item()`` would fail here, as a host sync would on CUDA."""
    s, t = logits()
    term = instance_term(s.to("meta"), t.to("meta"))
    assert all(p.device.type == "meta" for p in term.parameters())
    term.to("meta")
    loss = term(inputs_of(s.to("meta").requires_grad_(True), t.to("meta")))
    assert loss.shape == (B,) and loss.device.type == "meta"
    loss.mean().backward()


# ------------------------------------------------------------------------------------------ BatchNorm edge cases
def test_a_training_batch_of_one_uses_the_running_statistics_and_leaves_them():
    s, t = logits(seed=6)
    term = instance_term(s, t, seed=6)
    term(inputs_of(s, t))  # a real batch moves the running statistics away from (0, 1)
    stats = {k: v.clone() for k, v in term.temperature_net.state_dict().items()}
    one = term(inputs_of(s[:1], t[:1]))
    assert one.shape == (1,) and torch.isfinite(one).all()
    assert all(torch.equal(v, stats[k]) for k, v in term.temperature_net.state_dict().items())
    assert term.training and term.temperature_net.training  # nothing switched modes behind the caller's back
    term.eval()
    with torch.no_grad():
        torch.testing.assert_close(one.detach(), term(inputs_of(s[:1], t[:1])))


def test_eval_mode_works_counts_nothing_and_keeps_samples_apart():
    s, t = logits(b=6, seed=7)
    term = instance_term(s, t, seed=7)
    term(inputs_of(s, t))
    term.learned_temperature()  # reset
    term.eval()
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        loss = term(inputs_of(s, t))
        loss_p = term(inputs_of(s[perm], t[perm]))
        single = term(inputs_of(s[2:3], t[2:3]))
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss_p, loss[perm])
    torch.testing.assert_close(single, loss[2:3])  # running statistics: a sample's loss is its own
    assert term.learned_temperature() is None  # no training step since the last reading


def test_a_class_the_teacher_rules_out_keeps_everything_finite():
    s, t = logits(seed=8)
    t[:, 0] = float("-inf")
    term = instance_term(s, t, seed=8)
    s = s.requires_grad_(True)
    loss = term(inputs_of(s, t))
    loss.mean().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(s.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in term.parameters())
    tau = term.temperatures(s.detach(), term.floored_teacher_logits(inputs_of(s, t)))
    log_ps = F.log_softmax(s.detach() / tau[:, None], dim=1)[:, 1:]  # the student's softmax over every class
    p_t = F.softmax(t[:, 1:] / tau[:, None], dim=1)  # the teacher's over the classes it keeps
    torch.testing.assert_close(loss.detach(), (p_t * (p_t.log() - log_ps)).sum(1) * tau**2, rtol=1e-5, atol=1e-6)


class ClockTrap:
    """A clock that fails when read."""

    def __getattr__(self, name):
        raise AssertionError(f"forward read clock.{name} after before_step")


def test_forward_changes_its_state_in_place_and_reads_no_clock_after_before_step():
    """What the contract suite checks for every term (``carries_state``, the clock), in instance mode: BatchNorm's
    running statistics and the temperature sum change in place, so a captured CUDA-graph step stays valid."""
    s, t = logits(seed=12)
    term = instance_term(s, t, seed=12)
    held = {k: v.untyped_storage().data_ptr() for k, v in term.named_buffers()}
    term.before_step(Clock(progress=0.5, epoch=EPOCH, epochs=20))
    inputs = inputs_of(s, t)
    inputs.clock = ClockTrap()
    assert term(inputs).shape == (B,)
    assert int(term.temperature_net[0].num_batches_tracked) == 1  # the statistics did change ...
    assert {k: v.untyped_storage().data_ptr() for k, v in term.named_buffers()} == held  # ... in place
    assert type(term).carries_state is False


# ------------------------------------------------------------------------------------------ learned temperature, state
def test_learned_temperature_is_the_mean_per_sample_temperature_since_the_last_call():
    s, t = logits(b=8, seed=9)
    term = instance_term(s, t, seed=9)
    used = []
    for rows in (slice(0, 8), slice(0, 3)):  # batches of different sizes: a mean over samples, not over steps
        tau = term.temperatures(s[rows], t[rows]).detach()  # training mode: the same batch statistics as the forward's
        term(inputs_of(s[rows], t[rows]))
        used.append(tau)
    assert term.learned_temperature() == pytest.approx(float(torch.cat(used).mean()), rel=1e-6)
    assert term.learned_temperature() is None


def test_the_epoch_sums_of_two_ranks_give_the_mean_over_both_shards():
    """Under DDP each rank sees half the batch; the runner adds every rank's ``epoch_sums`` in place (all-reduce)
    before reading the temperature: done here by hand for two ranks of one module, the log is the mean over both."""
    s, t = logits(b=8, seed=12)
    ranks = [instance_term(s, t, seed=12), instance_term(s, t, seed=12)]
    used = []
    for term, rows in zip(ranks, (slice(0, 5), slice(5, 8))):
        used.append(term.temperatures(s[rows], t[rows]).detach())
        term(inputs_of(s[rows], t[rows]))
    totals = [a + b for a, b in zip(*(term.epoch_sums() for term in ranks))]
    for term in ranks:
        for mine, total in zip(term.epoch_sums(), totals):
            mine.copy_(total)  # what all_reduce(SUM) does to the live buffers
    expected = float(torch.cat(used).mean())
    assert [term.learned_temperature() for term in ranks] == pytest.approx([expected, expected], rel=1e-6)


def test_state_dict_carries_the_module_into_a_freshly_built_term():
    s, t = logits(seed=10)
    term = instance_term(s, t, seed=10)
    term(inputs_of(s, t)).mean().backward()
    with torch.no_grad():
        for p in term.parameters():
            p.sub_(0.1 * p.grad)
    state = term.state_dict()
    assert any(k.startswith("temperature_net.") and k.endswith("running_mean") for k in state)
    assert "theta" not in state
    fresh = instance_term(s, t, seed=11)
    fresh.load_state_dict(state, strict=True)
    term.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(inputs_of(s, t)), term(inputs_of(s, t)))


# ------------------------------------------------------------------------------------------ 4. through the CLI
def _student_records(run_dir) -> list[dict]:
    timing = {"seconds", "epoch_seconds", "train_seconds"}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in timing} for r in rows if r["model"] == "student"]


def test_instance_mode_trains_logs_its_temperature_and_resumes_to_the_same_numbers(tmp_path, capsys):
    raw = tiny_config(tmp_path, epochs=2)
    raw["baseline"] = {"enabled": False}
    raw["course"][0]["loss"] = {"ce": 0.1, "ctkd": {"weight": 0.9, "mode": "instance", "t_min": 2, "t_range": 10}}
    raw["data"]["augment"] = {"crop_padding": 1}  # the teacher cache then holds one entry per augmentation epoch
    config = tmp_path / "ctkd_instance.yaml"
    config.write_text(yaml.safe_dump(raw))
    full, cut = tmp_path / "full", tmp_path / "cut"

    code, _, err = run_main(["run", str(config), "--out", str(full), "--quiet"], capsys)
    assert code == 0, err
    # the module is sized on the runner's probe batch from the student's logits: the teachers' outputs of that
    # batch would have cost the cache a whole un-augmented pass ("epoch-none") that training never reads
    cached = [f.name for f in (tmp_path / "cache").rglob("*.safetensors") if "epoch-" in f.name]
    assert cached and not [name for name in cached if "epoch-none" in name], cached
    records = _student_records(full)
    temps = [r["learned_temperatures"]["ctkd"] for r in records]
    assert len(temps) == 2 and all(2.0 < x < 12.0 for x in temps) and temps[0] != temps[1]
    assert [r["temperature"] for r in records] == temps

    # the teacher is reused from the shared cache, so the first epoch counted is the student's first
    code, _, err = run_main(["run", str(config), "--out", str(cut), "--quiet", "--stop-after-epochs", "1"], capsys)
    assert code == 3, err
    lesson = torch.load(cut / "student" / "state.pt", weights_only=True)["lesson_state"]
    assert {f"ctkd.temperature_net.{k}" for k in ("0.running_mean", "1.weight", "4.bias")} <= set(lesson["terms"])
    # a resume that switches the mode cannot load the saved lesson state: one line, and the run is left as it was
    config_before = (cut / "config.yaml").read_text()
    code, _, err = run_main(["run", "--resume", str(cut), "--quiet", "--set", "course.0.loss.ctkd.mode=global"], capsys)
    assert code == 2 and "the saved lesson state does not fit lesson 0" in err and "resume without the change" in err
    assert (cut / "config.yaml").read_text() == config_before
    code, _, err = run_main(["run", "--resume", str(cut), "--quiet"], capsys)
    assert code == 0, err

    assert _student_records(cut) == records
    a = load_file(str(full / "student" / "model.safetensors"))
    b = load_file(str(cut / "student" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    whole, resumed = (json.loads((d / "report.json").read_text())["student"] for d in (full, cut))
    assert resumed["accuracy"] == whole["accuracy"]

