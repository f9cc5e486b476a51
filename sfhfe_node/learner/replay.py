"""The layout of the rows a learner keeps in memory for replay.

A *full* row holds a labelled record's standardised window (``window`` x
``n_features`` values, oldest first), its trends, its ``window`` label lags
and its label. A *compressed* row, for the latent tier, holds the record's
autoencoder code, its trends, its previous label and its label; replaying
it decodes the code into the window's last record and leaves the older
records at zero and the older lags unknown.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["expand_codes", "memory_rows", "split_rows"]


def memory_rows(
    rows: np.ndarray,
    windows: np.ndarray,
    lags: np.ndarray,
    y: np.ndarray,
    codes: torch.Tensor,
    trends: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The full and the compressed memory rows of a batch's ``rows``."""
    window_rows = windows[rows].reshape(len(rows), -1)
    full = np.concatenate(
        [window_rows, trends[rows], lags[rows], y[rows, None]], axis=1
    )
    code_rows = np.concatenate(
        [codes.numpy()[rows], trends[rows], lags[rows, -1:], y[rows, None]], axis=1
    )
    return full, code_rows


def split_rows(
    full: np.ndarray, window: int, n_features: int, trend_width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Windows, trends, label lags (float64) and raw targets (float64) of full
    memory rows."""
    W, d, T = window, n_features, trend_width
    windows = full[:, : W * d].reshape(-1, W, d)
    trends = full[:, W * d : W * d + T]
    lags = full[:, W * d + T : W * d + T + W].astype(np.float64)
    targets = full[:, -1].astype(np.float64)
    return windows, trends, lags, targets


def expand_codes(
    codes: np.ndarray,
    rebuilt: np.ndarray,
    window: int,
    n_features: int,
    trend_width: int,
    latent: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Windows, trends, label lags and raw targets of compressed memory rows.

    ``rebuilt`` [n, n_features] holds the decoded records of the ``codes``.
    """
    W, d, T, L = window, n_features, trend_width, latent
    code_windows = np.zeros((len(codes), W, d), dtype=np.float32)
    code_windows[:, -1] = rebuilt
    code_lags = np.full((len(codes), W), np.nan)
    code_lags[:, -1] = codes[:, -2]
    return code_windows, codes[:, L : L + T], code_lags, codes[:, -1]
