"""The plain-torch model zoo: parameter counts against the papers, forward shapes, stage taps, options."""
from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from curridistill.errors import UserError
from curridistill.models import MODELS, build_model, count_params
from curridistill.models.taps import FeatureTaps
from curridistill.models.zoo import ZOO_MODELS

torch.set_num_threads(1)  # tests share 2 cores; one thread is faster and deterministic

CIFAR_RESNETS = ["resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                 "resnet8x4", "resnet32x4"]
FOUR_STAGES = {"vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "mobilenetv2", "resnet18", "resnet34", "resnet50"}

# name -> (published params in millions at 100 classes, exact count at 100 classes). The exact counts were
# checked against RepDistiller's own modules (same state-dict shapes, same logits after a weight copy).
PUBLISHED = {
    "resnet56": (0.86, 861_620),
    "resnet20": (0.27, 278_324),
    "resnet110": (1.7, 1_736_564),
    "resnet32x4": (7.43, 7_433_860),
    "resnet8x4": (1.23, 1_233_540),
    "wrn_40_2": (2.25, 2_255_156),
    "wrn_16_2": (0.70, 703_284),
    "vgg13": (9.46, 9_462_180),
    "vgg8": (3.96, 3_965_028),
    "shufflenetv1": (0.95, 949_258),
    "shufflenetv2": (1.36, 1_355_528),
    "mobilenetv2": (0.81, 812_836),
}
# He et al. quote resnet20 / resnet110 for CIFAR-10 with parameter-free ("option A") shortcuts; RepDistiller
# (and this zoo) uses 1x1-conv + BN projections at the two stage transitions, and 100 classes add a bigger fc.
HE_OPTION_A = {"resnet20", "resnet110"}


def _projection_params(model: nn.Module) -> int:
    return sum(count_params(m.shortcut) for m in model.modules() if getattr(m, "shortcut", None) is not None)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_param_counts_match_published(name):
    published, exact = PUBLISHED[name]
    model = build_model(name, num_classes=100)
    assert count_params(model) == exact
    if name in HE_OPTION_A:  # compare like with like: CIFAR-10 head, no projection shortcuts
        model = build_model(name, num_classes=10)
        measured = count_params(model) - _projection_params(model)
    else:
        measured = count_params(model)
    assert abs(measured - published * 1e6) / (published * 1e6) < 0.02, (name, measured, published)


@pytest.mark.parametrize("name, expected", [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                                            ("resnet50", 25_557_032)])
def test_imagenet_resnets_match_torchvision_counts(name, expected):
    assert count_params(build_model(name, num_classes=1000)) == expected


def test_zoo_names_are_registered_with_the_common_signature():
    for name in ZOO_MODELS:
        assert name in MODELS
        params = list(inspect.signature(MODELS.get(name)).parameters.values())
        assert [p.name for p in params[:2]] == ["num_classes", "in_channels"], name
        assert (params[0].default, params[1].default) == (10, 3), name


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_forward_shape_and_stage_taps(name):
    model = build_model(name, num_classes=10).eval()
    n_stages = 4 if name in FOUR_STAGES else 3
    paths = [f"stage{i}" for i in range(1, n_stages + 1)]
    assert all(isinstance(getattr(model, p), nn.Module) for p in paths)
    assert not hasattr(model, f"stage{n_stages + 1}")
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == 10
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), FeatureTaps(model, paths) as taps:
        logits = model(x)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    assert set(taps.features) == set(paths)
    sizes = [taps.features[p].shape for p in paths]
    assert all(s[0] == 2 and len(s) == 4 for s in sizes)
    assert all(a[-1] >= b[-1] for a, b in zip(sizes, sizes[1:]))  # stages never grow spatially


def test_stage2_hook_fires_on_plain_forward_hook():
    model = build_model("resnet20", num_classes=10).eval()
    seen = []
    handle = model.stage2.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    handle.remove()
    assert seen == [torch.Size([2, 32, 16, 16])]


@pytest.mark.parametrize("name", CIFAR_RESNETS + ["wrn_16_1", "vgg8", "mobilenetv2",
                                 "shufflenetv1", "shufflenetv2", "resnet18"])
def test_single_channel_input(name):
    model = build_model(name, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "mobilenetv2", "shufflenetv1", "shufflenetv2"])
def test_train_mode_backward(name):
    model = build_model(name, num_classes=10).train()
    model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_trains_where_it_is_placed(name):
    """Issue 13's class of bugs for the zoo: on the ``meta`` device (shapes, no data) a tensor a model builds on
    the CPU in its forward, or a value it reads back to the host, fails as it would on CUDA; cheap for every model."""
    model = build_model(name, num_classes=10).to("meta").train()
    logits = model(torch.randn(2, 3, 32, 32, device="meta"))
    assert logits.shape == (2, 10) and logits.device.type == "meta"
    logits.logsumexp(1).mean().backward()
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters())


def test_weight_init_follows_reference():
    model = build_model("resnet8x4", num_classes=10)
    conv = model.stage3[0].conv1  # 128 -> 256, 3x3: kaiming normal, fan_out, relu gain
    expected_std = (2.0 / (conv.out_channels * 9)) ** 0.5
    assert conv.weight.mean().abs() < 0.1 * expected_std
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    for name in ("resnet8", "wrn_16_1", "vgg8", "mobilenetv2", "resnet18"):
        for m in build_model(name, num_classes=10).modules():
            if isinstance(m, nn.BatchNorm2d):
                assert torch.all(m.weight == 1) and torch.all(m.bias == 0), name
    vgg = build_model("vgg8", num_classes=10)
    assert vgg.fc.weight.std().item() == pytest.approx(0.01, rel=0.1) and torch.all(vgg.fc.bias == 0)


def test_wrn_factory_builds_any_depth_and_width():
    built = build_model("wrn", num_classes=100, kwargs={"depth": 40, "widen_factor": 2})
    assert count_params(built) == PUBLISHED["wrn_40_2"][1]
    assert len(built.stage1) == 6
    with pytest.raises(UserError, match="6n\\+4"):
        build_model("wrn", num_classes=10, kwargs={"depth": 15})
    with pytest.raises(UserError, match="widen_factor"):
        build_model("wrn", num_classes=10, kwargs={"widen_factor": 1.5})


def test_family_options():
    assert count_params(build_model("resnet_cifar", 100, kwargs={"depth": 56})) == PUBLISHED["resnet56"][1]
    with pytest.raises(UserError, match="6n\\+2"):
        build_model("resnet_cifar", 10, kwargs={"depth": 21})
    wide = build_model("mobilenetv2", 100, kwargs={"width_mult": 1.0})
    assert wide.stage1[0].conv[0].in_channels == 32 and count_params(wide) > 2e6
    assert build_model("shufflenetv2", 10, kwargs={"net_size": 0.5}).fc.in_features == 1024
    with pytest.raises(UserError, match="net_size"):
        build_model("shufflenetv2", 10, kwargs={"net_size": 3})
    plain = build_model("vgg8", 10, kwargs={"batch_norm": False})
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    with pytest.raises(UserError, match="cannot build"):
        build_model("resnet20", 10, kwargs={"widen_factor": 2})


def test_vgg_pools_once_more_for_64px_inputs():
    model = build_model("vgg8", num_classes=10).eval()
    with torch.no_grad(), FeatureTaps(model, ["stage4"]) as taps:
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert taps.features["stage4"].shape[-1] == 4


def test_imagenet_resnet_small_input_keeps_resolution():
    model = build_model("resnet18", num_classes=10, kwargs={"small_input": True}).eval()
    assert model.conv1.kernel_size == (3, 3) and isinstance(model.maxpool, nn.Identity)
    with torch.no_grad(), FeatureTaps(model, ["stage1", "stage4"]) as taps:
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert taps.features["stage1"].shape[-1] == 32 and taps.features["stage4"].shape[-1] == 4
    zero = build_model("resnet50", num_classes=10, kwargs={"zero_init_residual": True})
    assert torch.all(zero.stage1[0].bn3.weight == 0)
    with torch.no_grad():
        assert build_model("resnet34", num_classes=10).eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)
