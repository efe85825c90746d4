"""Binary-relevance metrics (keyphrase_pipeline/models/metrics.py) on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from keyphrase_pipeline.models.metrics import best_f1_threshold, binary_metrics, threshold_metrics


def test_best_f1_threshold_and_metrics():
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.65, 0.9])
    th = best_f1_threshold(y, s)
    assert th == pytest.approx(0.35)  # >= 0.35 catches every positive with one false positive: F1 0.889
    m = threshold_metrics(y, s)
    assert m["f1"] == pytest.approx(8 / 9) and m["recall"] == 1.0 and m["positives"] == 4 and m["n"] == 8
    assert binary_metrics(y, s, 0.5)["f1"] == pytest.approx(0.75)
    assert best_f1_threshold([1, 1], [0.2, 0.3]) == 0.5 and binary_metrics([1, 1], [0.2, 0.3], 0.1)["auc"] is None


def test_log_odds_clips_before_the_log():
    import numpy as np

    from keyphrase_pipeline.models.metrics import log_odds

    got = log_odds([0.5, 0.9, 0.0, 1.0])
    assert got.dtype == np.float64 and got[0] == 0.0 and abs(got[1] - np.log(9.0)) < 1e-12
    assert np.isfinite(got).all() and abs(got[2] - np.log(1e-6 / (1 - 1e-6))) < 1e-9 and abs(got[2] + got[3]) < 1e-9
