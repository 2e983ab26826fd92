"""The curriculum engine through real runs on digits: paced resume, CTKD direction, courses,
assistant chains, and every documented example config through the CLI."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from curridistill import api
from curridistill.config import load_config
from curridistill.knowledge import Clock, KnowledgeInputs, load_all
from curridistill.knowledge.kd import kd_loss
from curridistill.train.callbacks import StopAfterEpochs, StopRequested
from tests.helpers import REPO, run_main, tiny_config


def _records(run_dir, model="student"):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["model"] == model]


def test_resume_in_the_middle_of_a_paced_self_rescored_lesson(tmp_path):
    raw = tiny_config(tmp_path, epochs=4)
    raw["baseline"] = {"enabled": False}
    raw["course"][0]["curriculum"] = {"scorer": "student_loss", "rescore_every": 1,
                                      "pacing": {"kind": "linear", "start": 0.3, "end_at": 0.75}}
    cfg = load_config(raw)
    full = api.run(cfg, out=tmp_path / "full")
    with pytest.raises(StopRequested):
        api.run(cfg, out=tmp_path / "cut", callbacks=[StopAfterEpochs(2)])  # teacher reused -> stops after student epoch 2
    resumed = api.resume(tmp_path / "cut")
    a = load_file(str(tmp_path / "full" / "student" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "student" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["student"]["accuracy"] == full["student"]["accuracy"]
    fractions = [r["data_fraction"] for r in _records(tmp_path / "cut")]
    assert fractions == [r["data_fraction"] for r in _records(tmp_path / "full")]
    assert fractions[0] == pytest.approx(0.3, abs=0.01) and fractions[-1] == 1.0
    assert fractions == sorted(fractions)


def test_ctkd_temperature_ascends_the_kd_loss_while_the_student_descends_it():
    torch.manual_seed(0)
    term = load_all().get("ctkd")()
    term.train()
    s = torch.randn(32, 10, requires_grad=True)
    t = torch.randn(32, 10) * 3
    inputs = KnowledgeInputs(student_logits=s, targets=torch.zeros(32, dtype=torch.long), teacher_logits=t,
                             clock=Clock(progress=1.0, epoch=20, epochs=20))  # past the ramp: lambda = -1
    opt = torch.optim.SGD([s, term.theta], lr=0.5)
    tau0 = float(term.temperature().detach())
    kd_before_student = kd_loss(s.detach(), t, tau0).mean()
    term(inputs).mean().backward()
    # the true derivative of the KD loss w.r.t. theta, for comparison with what the GRL delivers
    theta = term.theta.detach().clone().requires_grad_(True)
    tau = term.params.t_min + term.params.t_range * torch.sigmoid(theta)
    kd_loss(s.detach(), t, tau[0]).mean().backward()
    assert torch.sign(term.theta.grad) == -torch.sign(theta.grad)  # reversed gradient
    opt.step()
    tau1 = float(term.temperature().detach())
    assert kd_loss(s.detach(), t, tau1).mean() > kd_loss(s.detach(), t, tau0).mean()  # temperature made KD harder
    assert kd_loss(s.detach(), t, tau0).mean() < kd_before_student  # the student's step lowered its KD loss


def _ctkd_theta_grad(epoch: int) -> float:
    torch.manual_seed(0)
    term = load_all().get("ctkd")()
    s, t = torch.randn(8, 5, requires_grad=True), torch.randn(8, 5)
    term(KnowledgeInputs(student_logits=s, targets=torch.zeros(8, dtype=torch.long), teacher_logits=t,
                         clock=Clock(progress=0.0, epoch=epoch, epochs=20))).mean().backward()
    return term.theta.grad.item()


def test_ctkd_adversarial_push_starts_small_and_reverses_the_full_gradient_after_the_ramp():
    """Official CTKD: lambda = CosineDecay(0, -1, 10) at the 1-based epoch, -0.0245 in the first epoch."""
    first, full = _ctkd_theta_grad(0), _ctkd_theta_grad(9)
    assert full != 0.0
    assert first / full == pytest.approx(0.5 * (1 - math.cos(math.pi / 10)), rel=1e-5)


def test_two_lesson_course_carries_weights_and_logs_each_lesson(tmp_path):
    raw = tiny_config(tmp_path, epochs=2)
    raw["baseline"] = {"enabled": False}
    raw["course"].append({"name": "labels", "epochs": 2, "loss": {"ce": 1}, "optimizer": {"name": "adam", "lr": 0.001},
                          "keep_optimizer": False})
    report = api.run(load_config(raw), out=tmp_path / "r")
    records = _records(tmp_path / "r")
    assert [(r["lesson"], r["epoch"], r["lesson_name"]) for r in records] == [
        (0, 0, "distill"), (0, 1, "distill"), (1, 0, "labels"), (1, 1, "labels")]
    assert records[2]["weights"] == {"ce": 1.0} and records[2]["temperature"] is None
    assert records[2]["val_accuracy"] >= records[1]["val_accuracy"] - 0.05  # lesson 2 starts from lesson 1's weights
    assert report["student"]["accuracy"] > 0.7


def test_one_assistant_chain_reports_each_link(tmp_path):
    raw = tiny_config(tmp_path, epochs=2)
    raw["assistants"] = [{"name": "mlp", "kwargs": {"hidden": [48], "image_size": 8}}]
    report = api.run(load_config(raw), out=tmp_path / "r")
    (link,) = report["assistants"]
    assert link["name"] == "assistant0" and link["params"] > report["student"]["params"]
    assert {"agreement", "kl_teacher_student"} <= set(link) and "vs_last_assistant" in report["student"]
    assert _records(tmp_path / "r", "assistant0")


def _check_pacing(out, report):
    # Hacohen-style pacing: data_fraction follows fixed_exponential (start 0.1, x1.9 every 40 steps, 21 steps/epoch)
    fr = [r["data_fraction"] for r in _records(out)]
    assert fr[0] == pytest.approx(0.1, abs=0.01) and fr[1] == pytest.approx(0.1, abs=0.01)  # step 21 < 40
    assert fr[2] == pytest.approx(0.19, abs=0.01) and fr == sorted(fr)


def _check_self_paced(out, report):  # mean sample weight below 1 at first, 1 once the quantile passes 1
    w = [r["mean_sample_weight"] for r in _records(out)]
    assert w[0] < 0.75 and w[-1] == 1.0


def _check_ctkd(out, report):  # the logged temperature is the learned one, starting near 1 + 20 sigmoid(1)
    temps = [r["temperature"] for r in _records(out)]
    assert temps[0] == pytest.approx(15.62, abs=0.2) and len(set(temps)) == 3


def _check_annealing(out, report):  # two lessons, mse then ce
    assert [(r["lesson"], list(r["weights"])) for r in _records(out)] == [(0, ["mse_logits"]), (0, ["mse_logits"]), (1, ["ce"])]


def _check_takd(out, report):  # one assistant between teacher and student, reported as a link
    assert len(report["assistants"]) == 1


def _check_rounds(out, report):  # an unreachable target runs the full budget, every round reported
    assert [r["phase"] for r in report["rounds"]] == ["student", "student-round1"]
    assert not any(r["target_reached"] for r in report["rounds"])


def _check_route(out, report):  # RCO route: anchors switch at thirds of the lesson
    assert [r["teacher_anchor"] for r in _records(out)] == ["epoch_1", "epoch_2", "final"]


EXAMPLE_CONFIGS = {  # configs/NAME.yaml -> (--set overrides that shrink it, what its log must show)
    "curriculum_confidence": (["course.0.epochs=4"], _check_pacing),
    "self_paced_kd": (["course.0.epochs=4"], _check_self_paced),
    "ctkd": (["course.0.epochs=3"], _check_ctkd),
    "annealing_kd": (["course.0.epochs=2", "course.1.epochs=1", "teacher.course.0.epochs=2"], _check_annealing),
    "takd_chain": (["course.0.epochs=2"], _check_takd),
    "rounds_until_target": (["course.0.epochs=1", "teacher.course.0.epochs=2", "repeat.until.at_least=1.01",
                             "repeat.max_rounds=2"], _check_rounds),
    "rco_route": (["course.0.epochs=3", "teacher.course.0.epochs=3", "teacher.keep_epochs=[1,2]",
                   "course.0.teacher.route=[epoch_1,epoch_2,final]"], _check_route),
}


@pytest.mark.parametrize("name", list(EXAMPLE_CONFIGS))
def test_example_configs_run_and_log_what_they_configure(tmp_path, capsys, name):
    sets, check = EXAMPLE_CONFIGS[name]
    out = tmp_path / name
    argv = ["run", str(REPO / "configs" / f"{name}.yaml"), "--out", str(out), "--quiet",
            "--set", f"run.cache_dir={tmp_path / 'cache'}", "--set", "run.eval.latency_runs=2"]
    code, _, err = run_main(argv + [a for v in sets for a in ("--set", v)], capsys)
    assert code == 0, err
    check(out, json.loads((out / "report.json").read_text()))
