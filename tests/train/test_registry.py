"""Registry (registry.py): names from configs map to objects; a miss is a one-line UserError with a suggestion."""
import pytest

from curridistill.errors import UserError
from curridistill.knowledge import KNOWLEDGE, load_all
from curridistill.registry import Registry


def fresh() -> Registry:
    reg = Registry("model")

    @reg.register("resnet20")
    def resnet20():
        return "resnet20"

    reg.add("mlp", lambda: "mlp")
    reg.add("cnn", lambda: "cnn")
    return reg


def test_register_and_get():
    reg = fresh()
    assert reg.get("resnet20")() == "resnet20"  # the decorator returned the function itself
    assert reg.get("mlp")() == "mlp"
    assert "cnn" in reg and "vit" not in reg
    assert list(reg) == ["cnn", "mlp", "resnet20"]  # sorted
    assert [name for name, _ in reg.items()] == ["cnn", "mlp", "resnet20"]


def test_a_name_registered_twice_is_refused():
    reg = fresh()
    with pytest.raises(ValueError, match="model 'mlp' is registered twice"):
        reg.add("mlp", object())
    assert reg.get("mlp")() == "mlp"  # the first stays


def test_unknown_name_suggests_the_nearest():
    with pytest.raises(UserError) as info:
        fresh().get("mlpp", where="student.name")
    assert str(info.value) == "unknown model 'mlpp' at student.name; did you mean 'mlp'?"
    assert "\n" not in str(info.value)


def test_unknown_name_far_from_all_lists_the_valid_names():
    with pytest.raises(UserError) as info:
        fresh().get("transformer")
    assert str(info.value) == "unknown model 'transformer'; valid names: cnn, mlp, resnet20"


def test_a_real_registry_answers_the_same_way():
    load_all()
    assert "kd" in KNOWLEDGE and "dkd" in KNOWLEDGE
    with pytest.raises(UserError, match=r"unknown knowledge term 'dkdd' at loss\.dkdd; did you mean 'dkd'\?"):
        KNOWLEDGE.get("dkdd", where="loss.dkdd")
