"""Tests of the label encoder."""

from __future__ import annotations

import numpy as np

from sfhfe_node.learner import LabelEncoder


def test_indices_follow_first_appearance() -> None:
    """Labels get 0, 1, 2 ... in the order they first appear."""
    encoder = LabelEncoder(4)
    assert [encoder.encode(v) for v in ("UP", "DOWN", "UP", "FLAT")] == [0, 1, 0, 2]
    assert encoder.classes == ["UP", "DOWN", "FLAT"]


def test_numeric_spellings_are_one_label() -> None:
    """"1", 1, 1.0 and " 1.0 " are the same class."""
    encoder = LabelEncoder()
    assert {encoder.encode(v) for v in ("1", 1, 1.0, " 1.0 ", np.int64(1))} == {0}


def test_label_beyond_max_classes_is_refused_and_counted() -> None:
    """A new label past max_classes encodes to -1 and counts as rejected."""
    encoder = LabelEncoder(2)
    codes = encoder.encode_many(["a", "b", "c", "a", "d"])
    assert codes.tolist() == [0, 1, -1, 0, -1]
    assert encoder.rejected == 2


def test_missing_labels_are_minus_one() -> None:
    """Empty, NaN and None labels are -1 and counted as missing."""
    encoder = LabelEncoder()
    assert [encoder.encode(v) for v in ("", "nan", None, float("nan"))] == [-1] * 4
    assert encoder.missing == 4 and encoder.classes == []


def test_state_round_trip() -> None:
    """A restored encoder maps old labels to the same indices and counts on."""
    encoder = LabelEncoder(3)
    encoder.encode_many(["x", "y", "z", "w"])
    twin = LabelEncoder(3)
    twin.load_state_dict(encoder.state_dict())
    assert twin.encode("z") == 2 and twin.encode("q") == -1
    assert twin.rejected == 2 and twin.decode(1) == "y"
