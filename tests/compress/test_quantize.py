"""Post-training int8: weights shrink, outputs stay close to fp32, and a model FX cannot trace is one clear line."""
import pytest
import torch
from torch import nn

from curridistill.evaluate.measure import state_bytes
from curridistill.compress.quantize import quantize
from curridistill.errors import UserError
from curridistill.models import build_model

CASES = [("mlp", {"hidden": [256], "image_size": 8}, (1, 8, 8), "dynamic", 2.5),
         ("mlp", {"hidden": [256], "image_size": 8}, (1, 8, 8), "static", 2.0),
         ("cnn", {"widths": [32, 64]}, (1, 8, 8), "static", 2.5),
         ("resnet8", {}, (3, 32, 32), "static", 2.0)]


@pytest.mark.parametrize("name,kwargs,shape,mode,ratio", CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_int8_shrinks_weights_and_stays_close(name, kwargs, shape, mode, ratio):
    torch.manual_seed(0)
    model = build_model(name, 10, shape[0], kwargs).eval()
    x = torch.randn(32, *shape)
    q = quantize(model, mode, [torch.randn(16, *shape) for _ in range(4)])
    assert state_bytes(model) / state_bytes(q) >= ratio
    with torch.inference_mode():
        ref, out = model(x), q(x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (ref - out).abs().max() < 0.1 * ref.abs().max() + 0.05
    assert (ref.argmax(1) == out.argmax(1)).float().mean() >= 0.8
    assert next(model.parameters()).dtype == torch.float32  # the source model is untouched


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: FX cannot trace it
            return self.fc(x.flatten(1))
        return -self.fc(x.flatten(1))


def test_static_on_untraceable_model_is_a_user_error():
    with pytest.raises(UserError, match="torch.fx can trace"):
        quantize(Branchy(), "static", [torch.randn(4, 1, 8, 8)])
    assert quantize(Branchy(), "dynamic")(torch.ones(2, 1, 8, 8)).shape == (2, 10)  # dynamic works on any model


def test_fake_quantized_weights_pass_gradients_and_hooks_come_off():
    from curridistill.compress.quantize import fake_quantize_weight, fake_quantize_weights

    torch.manual_seed(0)
    w = torch.randn(4, 3, requires_grad=True)
    q = fake_quantize_weight(w, bits=4)
    assert q.detach().unique().numel() <= 4 * 16 and (q - w).abs().max() < w.abs().max() / 7 + 1e-6
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight through
    model = build_model("cnn", 10, 1, {"widths": [8, 16]}).eval()
    x = torch.randn(4, 1, 8, 8)
    ref = model(x)
    keys = list(model.state_dict())
    handles = fake_quantize_weights(model, bits=4)
    fq = model(x)
    assert not torch.allclose(fq, ref) and (fq - ref).abs().max() < 0.5 * ref.abs().max()
    assert list(model.state_dict()) == keys  # checkpoints and resume see a normal model
    for h in handles:
        h.remove()
    torch.testing.assert_close(model(x), ref)


def test_quantize_aware_lesson_trains_and_teacher_stays_float(tmp_path):
    import json

    import yaml

    from curridistill import cli
    from curridistill.models.checkpoint import load_model
    from tests.helpers import tiny_config

    lesson = {"loss": {"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4}}, "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}}
    cfg = tiny_config(tmp_path, student={"name": "cnn", "kwargs": {"widths": [8, 16]}}, baseline={"enabled": False},
                      course=[{"name": "distill", "epochs": 3, **lesson},
                              {"name": "qat", "epochs": 2, "quantize_aware": {"bits": 4}, **lesson}])
    cfg["run"]["tensorboard"] = False
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["student"]["accuracy"] > 0.7
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lesson"] for r in records if r["model"] == "student"] == [0, 0, 0, 1, 1]
    assert [r["lesson"] for r in records if r["model"] == "teacher"] == [0, 0, 0, 1, 1]  # teacher: float lessons
    model, _ = load_model(tmp_path / "run" / "student" / "model.safetensors")
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())
