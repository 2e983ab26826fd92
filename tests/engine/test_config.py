import pytest
import yaml

from curridistill.config import load_config
from curridistill.errors import UserError
from tests.helpers import tiny_config


def test_defaults_are_filled_and_overrides_apply(tmp_path):
    cfg = load_config(tiny_config(tmp_path), ["course.0.loss.kd.temperature=2", "data.batch_size=32", "run.seed=7"])
    assert cfg.course[0].loss["kd"].temperature.value == 2
    assert cfg.data.batch_size == 32 and cfg.run.seed == 7
    assert cfg.course[0].loss["ce"].weight.value == pytest.approx(0.1)
    assert cfg.run.selection == "best_val"


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load_config(tiny_config(tmp_path))
    again = load_config(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["course"][0].update(optimzer={}), r"unknown key 'course\.0\.optimzer'; did you mean 'optimizer'"),
    (lambda c: c["data"].update(batchsize=3), r"unknown key 'data\.batchsize'; did you mean 'batch_size'"),
    (lambda c: c["run"].update(sed=1), r"unknown key 'run\.sed'; did you mean 'seed'"),
    (lambda c: c["course"][0]["loss"].update(kdd=0.5), r"unknown knowledge term 'kdd'; did you mean 'kd'"),
    (lambda c: c["course"][0]["loss"]["kd"].update(temprature=1), r"unknown option 'temprature' for term 'kd'; did you mean 'temperature'"),
    (lambda c: c["course"][0].update(epochs=0), r"course\.0\.epochs"),
    (lambda c: c.pop("student"), r"missing required key 'student'"),
    (lambda c: c["course"][0]["optimizer"].update(name="sgdd"), r"course\.0\.optimizer\.name"),
])
def test_bad_configs_name_the_key(tmp_path, mutate, message):
    raw = tiny_config(tmp_path)
    mutate(raw)
    with pytest.raises(UserError, match=message):
        load_config(raw)


def test_bad_override_syntax(tmp_path):
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        load_config(tiny_config(tmp_path), ["course.0.epochs"])
    with pytest.raises(UserError, match="use an index 0..0"):
        load_config(tiny_config(tmp_path), ["course.3.epochs=2"])


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("keep, ok", [([2], True), ([4], False)])
def test_keep_epochs_count_the_course_the_teacher_trains(tmp_path, keep, ok):
    """A teacher without a course of its own trains the student's lessons minus the prune lessons: 2 epochs of
    2 + 3 here, so an anchor after epoch 4 would never be saved."""
    raw = tiny_config(tmp_path, epochs=2)
    raw["course"] = [raw["course"][0], {**raw["course"][0], "epochs": 3, "prune": {"amount": 0.5}}]
    raw["teacher"]["keep_epochs"] = keep
    if ok:
        assert load_config(raw).all_teachers()[0].keep_epochs == keep
    else:
        with pytest.raises(UserError, match=r"keep_epochs \[4\] lie outside the teacher's 2 epoch\(s\)"):
            load_config(raw)
