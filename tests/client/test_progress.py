"""The scoreboard scores the node and the no-change baseline alike."""

from __future__ import annotations

import numpy as np

from sfhfe_node.client.progress import Scoreboard


def test_scores_across_batches() -> None:
    """Accuracy and no-change accuracy follow their closed forms over two batches."""
    board = Scoreboard()
    board.update(np.array([1, 1, 0]), np.array([1, 0, 0]))
    board.update(np.array([0, 1]), np.array([0, 1]))
    assert board.labelled == 5
    assert board.accuracy == 4 / 5
    # labels 1 0 0 0 1: no guess for the first, then 0 vs 1, 0 vs 0, 0 vs 0, 1 vs 0.
    assert board.no_change_accuracy == 2 / 5


def test_unlabelled_records_do_not_count() -> None:
    """Records without a label are neither right nor wrong."""
    board = Scoreboard()
    board.update(np.array([1, 0]), np.array([-1, 0]))
    assert board.labelled == 1 and board.correct == 1
