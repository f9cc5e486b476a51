"""Tests of governance rules: the file format and their effect on the learner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sfhfe_node.errors import ConfigError
from sfhfe_node.learner import LabelEncoder, Learner, Rules, load_rules

NAMES = ["a", "b", "c"]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_toml_and_json_rules_load_alike(tmp_path: Path) -> None:
    """The same rules written in TOML and in JSON load to equal objects."""
    toml = _write(
        tmp_path,
        "r.toml",
        'allowed_labels = ["0", 1]\ntarget_range = [0, 5]\n'
        "[ranges]\na = [-1.0, 1.0]\n[monotonic]\nc = \"increasing\"\n",
    )
    data = {
        "allowed_labels": ["0", "1"],
        "target_range": [0, 5],
        "ranges": {"a": [-1.0, 1.0]},
        "monotonic": {"c": "increasing"},
    }
    from_json = load_rules(_write(tmp_path, "r.json", json.dumps(data)))
    assert load_rules(toml) == from_json
    assert from_json.ranges == {"a": (-1.0, 1.0)}
    assert from_json.allowed_labels == ("0", "1")


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("r.yaml", "x", ".toml or .json"),
        ("r.toml", "ranges = [", "does not parse"),
        ("r.json", '{"colour": 1}', "unknown rule keys"),
        ("r.json", '{"ranges": {"a": [2, 1]}}', "above high"),
        ("r.json", '{"ranges": {"a": [0, "x"]}}', "not a number"),
        ("r.json", '{"monotonic": {"a": "up"}}', "increasing"),
        ("r.json", '{"allowed_labels": []}', "non-empty"),
        ("r.json", "[1, 2]", "must be a table"),
    ],
)
def test_bad_rules_file_names_the_problem(
    tmp_path: Path, name: str, text: str, fragment: str
) -> None:
    """A malformed rules file raises ConfigError saying what is wrong."""
    with pytest.raises(ConfigError, match=fragment):
        load_rules(_write(tmp_path, name, text))


def test_missing_rules_file_is_a_config_error(tmp_path: Path) -> None:
    """A rules path that does not exist raises ConfigError, not OSError."""
    with pytest.raises(ConfigError, match="cannot be read"):
        load_rules(tmp_path / "absent.toml")


def test_rule_on_unknown_feature_is_refused() -> None:
    """A learner refuses rules that name a feature the stream does not have."""
    with pytest.raises(ConfigError, match="unknown features"):
        Learner(3, feature_names=NAMES, rules=Rules(ranges={"zz": (0.0, 1.0)}))


def test_out_of_range_and_non_monotonic_records_are_counted_and_excluded() -> None:
    """Violating rows are predicted, counted per rule and not learned."""
    rules = Rules(ranges={"a": (-1.0, 1.0)}, monotonic={"c": "increasing"})
    learner = Learner(3, feature_names=NAMES, rules=rules, seed=0)
    X = np.zeros((8, 3))
    X[:, 2] = np.arange(8.0)
    X[1, 0] = 5.0  # out of range
    X[4, 2] = 0.5  # goes down
    prediction, report = learner.step(X, np.zeros(8))
    assert prediction.labels.shape == (8,)
    assert report.excluded == 2 and report.learned == 6
    violations = learner.status()["governance"]["violations"]
    assert violations["range"] == 1 and violations["monotonic"] == 1


def test_predictions_never_take_a_label_that_is_not_allowed() -> None:
    """Only allowed labels are predicted, and rows with other labels are excluded."""
    labels = LabelEncoder(4)
    rules = Rules(allowed_labels=("up", "down"))
    learner = Learner(3, max_classes=4, rules=rules, labels=labels, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        X = rng.normal(size=(32, 3))
        raw = np.where(X[:, 0] > 0.5, "flat", np.where(X[:, 1] > 0, "up", "down"))
        prediction, _ = learner.step(X, labels.encode_many(raw))
    allowed = {labels.classes.index("up"), labels.classes.index("down")}
    assert set(prediction.labels.tolist()) <= allowed
    assert learner.status()["governance"]["violations"]["label"] > 0


def test_regression_outputs_are_clipped_into_the_target_range() -> None:
    """With a target range, every regression prediction lies inside it."""
    learner = Learner(2, task="regression", rules=Rules(target_range=(0.0, 1.0)))
    rng = np.random.default_rng(1)
    for _ in range(10):
        X = rng.normal(size=(32, 2))
        prediction, _ = learner.step(X, 10 * X[:, 0])
    assert prediction.values.min() >= 0.0 and prediction.values.max() <= 1.0
