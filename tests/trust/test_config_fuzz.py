"""Fuzzing the config loader with hypothesis: any YAML text, any nesting of plausible keys and values, any
--set override gives a Config or one UserError line, never another exception."""
import os
import string

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from curridistill.config import load_config
from curridistill.errors import UserError

KEYS = ["data", "teacher", "teachers", "student", "course", "run", "name", "kwargs", "epochs", "loss", "kd", "ce",
        "weight", "temperature", "kind", "start", "end", "batch_size", "val_size", "optimizer", "lr", "lr_schedule",
        "curriculum", "pacing", "scorer", "seeds", "threads", "assistants", "repeat", "tune", "space", "lessons",
        "options", "checkpoint", "studnet", "cource", "", "0", "1"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12), st.sampled_from(["mlp", "cnn", "kd", "ce", "cosine", "linear", "digits", "os:system"]))
trees = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.sampled_from(KEYS), children, max_size=5),
    st.dictionaries(st.one_of(st.integers(-3, 3), st.none(), st.booleans()), children, max_size=2)), max_leaves=25)
EXAMPLES = int(os.environ.get("CURRIDISTILL_FUZZ_EXAMPLES", "150"))  # raise it for a longer hunt
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])


def _load(path, overrides=()):
    try:
        load_config(path, list(overrides))
    except UserError as exc:
        assert "\n" not in str(exc).strip(), str(exc)


@SETTINGS
@given(tree=st.dictionaries(st.sampled_from(KEYS), trees, max_size=6))
def test_structured_configs_never_raise_anything_but_user_error(tree, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    _load(path)


@SETTINGS
@given(text=st.text(alphabet=string.printable + "\x00\x85é{}[]:-&*!|>'\"%@`", max_size=200))
def test_any_text_never_raises_anything_but_user_error(text, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    _load(path)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_any_bytes_never_raise_anything_but_user_error(data, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    _load(path)


@SETTINGS
@given(overrides=st.lists(st.tuples(st.lists(st.sampled_from(KEYS), min_size=1, max_size=4),
                                    st.text(alphabet=string.printable, max_size=15)), max_size=3))
def test_any_override_never_raises_anything_but_user_error(overrides, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"student": {"name": "mlp"}, "course": [{"epochs": 1, "loss": {"ce": 1}}]}))
    _load(path, [".".join(keys) + "=" + value for keys, value in overrides])
