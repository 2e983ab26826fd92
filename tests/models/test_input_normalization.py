"""A loaded checkpoint sees inputs normalized with the statistics it was trained with (its spec), not
the current data's; nothing changes when they are the same."""
import torch

from curridistill import api
from curridistill.config import DataConfig, load_config
from curridistill.data.pipeline import Pipeline, load_splits
from curridistill.evaluate.metrics import classification_metrics
from curridistill.models import build_model
from curridistill.models.checkpoint import load_model, match_input_normalization
from tests.helpers import tiny_config


def model_and_spec(mean, std, normalize=True):
    torch.manual_seed(0)
    model = build_model("cnn", 10, 3, {"widths": [4, 8]}).eval()
    return model, {"mean": mean, "std": std, "normalize": normalize}


def test_known_value_renormalization():
    model, spec = model_and_spec([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    cur_mean, cur_std = torch.tensor([0.45, 0.5, 0.2]).view(1, 3, 1, 1), torch.tensor([0.3, 0.2, 0.25]).view(1, 3, 1, 1)
    pixels = torch.rand(4, 3, 8, 8)
    x_cur = (pixels - cur_mean) / cur_std
    x_own = (pixels - torch.tensor(spec["mean"]).view(1, 3, 1, 1)) / torch.tensor(spec["std"]).view(1, 3, 1, 1)
    expected = model(x_own)
    assert match_input_normalization(model, spec, cur_mean, cur_std)
    torch.testing.assert_close(model(x_cur), expected, rtol=1e-5, atol=1e-5)


def test_same_statistics_add_nothing_and_unnormalized_specs_map_to_pixels():
    model, spec = model_and_spec([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    assert not match_input_normalization(model, spec, torch.tensor(spec["mean"]).view(1, 3, 1, 1),
                                         torch.tensor(spec["std"]).view(1, 3, 1, 1))
    assert not model._forward_pre_hooks
    raw_model, raw_spec = model_and_spec([0.5, 0.4, 0.3], [0.2, 0.25, 0.3], normalize=False)
    cur_mean, cur_std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    pixels = torch.rand(2, 3, 8, 8)
    expected = raw_model(pixels)
    assert match_input_normalization(raw_model, raw_spec, cur_mean, cur_std)
    torch.testing.assert_close(raw_model((pixels - cur_mean) / cur_std), expected, rtol=1e-5, atol=1e-5)


def test_teacher_trained_on_a_subset_keeps_its_accuracy_on_other_data(tmp_path):
    raw = tiny_config(tmp_path, epochs=2, baseline={"enabled": False})
    raw["data"]["subset"] = 600  # its own statistics differ from the full set's
    api.run(load_config(raw), out=tmp_path / "subset")
    ckpt = tmp_path / "subset" / "teacher" / "model.safetensors"
    model, spec = load_model(ckpt)
    data = DataConfig(name="digits", val_size=0.1)
    pipe = Pipeline(load_splits(data), data, torch.device("cpu"))
    assert not torch.allclose(pipe.mean.flatten(), torch.tensor(spec["mean"]))
    own = torch.tensor(spec["mean"]).view(pipe.mean.shape), torch.tensor(spec["std"]).view(pipe.std.shape)
    x = (pipe.to_float(pipe.splits.test.x) - own[0]) / own[1]  # what the teacher saw in training
    with torch.no_grad():
        own_logits = model.eval()(x)
        assert not torch.allclose(own_logits, model(pipe.normalize(pipe.to_float(pipe.splits.test.x))))
    expected = classification_metrics(own_logits, pipe.splits.test.y)["accuracy"]
    raw = tiny_config(tmp_path, epochs=1, baseline={"enabled": False})
    raw["teacher"] = {"name": "cnn", "checkpoint": str(ckpt)}
    report = api.run(load_config(raw), out=tmp_path / "full")
    assert report["teacher"]["accuracy"] == expected
