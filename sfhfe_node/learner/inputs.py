"""Checks of the batches a learner is given: features, targets, labelled rows."""

from __future__ import annotations

import numpy as np

from sfhfe_node.errors import LearnerError

__all__ = ["check_features", "check_options", "check_targets", "labelled_rows"]


def check_features(X: np.ndarray, n_features: int) -> np.ndarray:
    """``X`` as float64 [n, n_features]; :class:`LearnerError` otherwise."""
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LearnerError(f"features are not numeric: {exc}") from None
    if X.ndim != 2 or X.shape[1] != n_features:
        raise LearnerError(
            f"expected features of shape [n, {n_features}], got {X.shape}"
        )
    return X


def check_targets(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` as float64 [n]; :class:`LearnerError` otherwise."""
    try:
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LearnerError(f"targets are not numeric: {exc}") from None
    if y.shape != (n,):
        raise LearnerError(f"expected {n} targets of shape [{n}], got {y.shape}")
    return y


def labelled_rows(
    y: np.ndarray, task: str, max_classes: int, max_abs: float
) -> np.ndarray:
    """Which rows of ``y`` carry a usable label for ``task``, as a bool mask.

    A class index must be a whole number in ``[0, max_classes)``, a
    regression target a finite number within ``max_abs``.
    """
    known = np.isfinite(y)
    if task == "classification":
        known &= (y >= 0) & (y < max_classes) & (y == np.floor(y))
    elif task == "regression":
        known &= np.abs(y) <= max_abs
    return known


def check_options(
    n_features: int,
    *,
    task: str,
    tasks: tuple[str, ...],
    routing: str,
    routings: tuple[str, ...],
    max_classes: int,
    window: int,
    replay_every: int,
    structure_every: int,
    lr_floor: float,
    lr_ceiling: float,
    feature_names: list[str] | None,
) -> list[str] | None:
    """A copy of ``feature_names``, once the learner's settings are checked.

    Raises :class:`LearnerError` for a task or routing outside ``tasks`` or
    ``routings``, a size out of range, learning-rate bounds outside
    ``0 < lr_floor <= lr_ceiling <= 10`` or feature names that are not
    ``n_features`` distinct names.
    """
    if task not in tasks:
        raise LearnerError(f"task {task!r} is not supported; use one of {tasks}")
    if routing not in routings:
        raise LearnerError(f"routing {routing!r} is not one of {routings}")
    if (
        n_features < 1 or max_classes < 2 or window < 2 or replay_every < 1
        or structure_every < 1
    ):
        raise LearnerError(
            f"n_features={n_features}, max_classes={max_classes}, "
            f"window={window}, replay_every={replay_every} and "
            f"structure_every={structure_every} are out of range "
            "(need n_features >= 1, max_classes >= 2, window >= 2)"
        )
    if not 0 < lr_floor <= lr_ceiling <= 10.0:
        raise LearnerError(
            f"need 0 < lr_floor <= lr_ceiling <= 10, got {lr_floor}, {lr_ceiling}"
        )
    names = list(feature_names) if feature_names is not None else None
    if names is not None and (
        len(names) != n_features or len(set(names)) != n_features
    ):
        raise LearnerError(f"need {n_features} distinct feature names, got {names}")
    return names
