import math
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from agestudy import metrics as M
from agestudy.plots import gallery
from agestudy.runs import TRAIN_ACC, TRAIN_LOSS, VAL_ACC, VAL_LOSS


# --------------------------------------------------------------------------
# ECE
# --------------------------------------------------------------------------
def test_ece_zero_for_perfectly_calibrated_toy_case():
    # 20 samples with p1 = 0.75 (confidence 0.75, predict 1): 15 are label 1.
    # 10 samples with p1 = 0.30 (confidence 0.70, predict 0): 7 are label 0.
    # Each bin's accuracy equals its confidence exactly.
    labels = np.array([1] * 15 + [0] * 5 + [0] * 7 + [1] * 3)
    p1 = np.array([0.75] * 20 + [0.30] * 10)
    assert M.expected_calibration_error(labels, p1) == pytest.approx(0.0, abs=1e-12)


def test_ece_large_for_overconfident_wrong_predictions():
    labels = np.array([0, 0, 1, 1])
    p1 = np.array([0.99, 0.99, 0.01, 0.01])  # confident and always wrong
    assert M.expected_calibration_error(labels, p1) == pytest.approx(0.99)


def test_ece_hand_computed_two_bins():
    # n_bins=10. Bin (0.9, 1]: confidences 0.93 (correct), 0.97 (wrong)
    #   -> acc 0.5, mean conf 0.95, gap 0.45, weight 2/4.
    # Bin (0.6, 0.7]: confidences 0.62 (correct), 0.68 (correct)
    #   -> acc 1.0, mean conf 0.65, gap 0.35, weight 2/4.
    labels = np.array([1, 1, 1, 0])
    p1 = np.array([0.93, 0.03, 0.62, 0.32])
    ece = M.expected_calibration_error(labels, p1, n_bins=10)
    assert ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.35)


def test_ece_symmetric_under_class_swap():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    p1 = rng.uniform(0.01, 0.99, 200)
    p1 = p1[np.abs(p1 - 0.5) > 1e-3]  # avoid the 0.5 tie, which goes to class 1
    labels = labels[: p1.size]
    a = M.expected_calibration_error(labels, p1)
    b = M.expected_calibration_error(1 - labels, 1 - p1)
    assert a == pytest.approx(b)


def test_calibration_bins_counts_and_confidence():
    bins = M.calibration_bins([1, 0, 1], [0.95, 0.05, 0.55], n_bins=10)
    assert bins["edges"].shape == (11,)
    assert bins["count"].sum() == 3
    assert bins["count"][9] == 2 and bins["count"][5] == 1
    assert bins["confidence"][9] == pytest.approx(0.95)
    assert np.isnan(bins["accuracy"][0])


# --------------------------------------------------------------------------
# classification_metrics
# --------------------------------------------------------------------------
def test_classification_metrics_hand_computed():
    labels = np.array([0, 0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.6, 0.7, 0.2])
    # predictions: 0 0 1 1 0 -> correct: 1 1 0 1 0
    m = M.classification_metrics(labels, p1)
    assert set(m) == {"accuracy", "balanced_accuracy", "roc_auc", "log_loss", "brier", "ece"}
    assert all(isinstance(v, float) for v in m.values())
    assert m["accuracy"] == pytest.approx(3 / 5)
    # recall class 0 = 2/3, recall class 1 = 1/2
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # (0.1^2 + 0.4^2 + 0.6^2 + 0.3^2 + 0.8^2) / 5 = 1.26 / 5
    assert m["brier"] == pytest.approx(0.252)
    # positive/negative pairs ranked correctly: 0.7 beats all 3, 0.2 beats 0.1 -> 4/6
    assert m["roc_auc"] == pytest.approx(4 / 6)
    expected_ll = -(math.log(0.9) + math.log(0.6) + math.log(0.4) + math.log(0.7) + math.log(0.2)) / 5
    assert m["log_loss"] == pytest.approx(expected_ll)
    assert 0.0 <= m["ece"] <= 1.0


def test_threshold_tie_predicts_class_1():
    m = M.classification_metrics([1, 0], [0.5, 0.5])
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx(0.5)


def test_one_class_gives_nan_auc_without_warnings():
    labels = np.ones(6, dtype=int)
    p1 = np.array([0.9, 0.8, 0.3, 0.6, 0.55, 0.1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = M.classification_metrics(labels, p1)
    assert math.isnan(m["roc_auc"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx(4 / 6)
    for k in ("accuracy", "balanced_accuracy", "log_loss", "brier", "ece"):
        assert math.isfinite(m[k])


def test_log_loss_is_clipped():
    m = M.classification_metrics([0, 1], [1.0, 0.0])  # certain and wrong
    assert math.isfinite(m["log_loss"])
    assert m["log_loss"] == pytest.approx(-math.log(M.LOG_LOSS_EPS), rel=1e-6)


@pytest.mark.parametrize(
    "labels, p1",
    [([0, 1], [0.2]), ([0, 2], [0.2, 0.3]), ([0, 1], [0.2, 1.5]), ([0, 1], [0.2, np.nan]), ([], [])],
)
def test_invalid_inputs_raise(labels, p1):
    with pytest.raises(ValueError):
        M.classification_metrics(labels, p1)


# --------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------
def _check_png(path):
    assert path.exists() and path.stat().st_size > 0
    assert path.stat().st_size < 500_000
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


@pytest.fixture
def toy():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 100)
    p1 = np.clip(0.35 * labels + rng.uniform(0, 0.65, 100), 0, 1)
    return labels, p1


@pytest.fixture(autouse=True)
def no_figures_left_open():
    plt.close("all")
    yield
    assert plt.get_fignums() == []


def test_plot_roc(tmp_path, toy):
    out = M.plot_roc(*toy, tmp_path / "roc.png")
    assert out == tmp_path / "roc.png"
    _check_png(out)


def test_plot_roc_one_class(tmp_path):
    _check_png(M.plot_roc([1, 1, 1], [0.2, 0.7, 0.9], str(tmp_path / "roc1.png")))


def test_plot_reliability(tmp_path, toy):
    _check_png(M.plot_reliability(*toy, tmp_path / "rel.png", n_bins=10))
    _check_png(M.plot_reliability(*toy, tmp_path / "rel15.png"))


def test_plot_confusion(tmp_path, toy):
    labels, p1 = toy
    _check_png(M.plot_confusion(labels, (p1 >= 0.5).astype(int), tmp_path / "cm.png"))
    # an absent true class must not crash (row percentage undefined)
    _check_png(M.plot_confusion([1, 1, 1], [0, 1, 1], tmp_path / "cm1.png"))


def test_plot_learning_curve(tmp_path):
    hist = {
        TRAIN_LOSS: [(i, 1.0 / (i + 1)) for i in range(0, 200, 5)],
        TRAIN_ACC: [(i, 0.5 + i / 500) for i in range(0, 200, 5)],
        VAL_LOSS: [(50, 0.6), (100, 0.5), (150, 0.45)],
        VAL_ACC: [(150, 0.78), (50, 0.62), (100, 0.7)],  # unsorted is fine
    }
    _check_png(M.plot_learning_curve(hist, tmp_path / "lc.png"))


@pytest.mark.parametrize(
    "hist",
    [{}, {TRAIN_LOSS: [(0, 0.7), (1, 0.6)]}, {VAL_ACC: []}, {VAL_ACC: [(10, 0.8)]}],
)
def test_plot_learning_curve_tolerates_missing_keys(tmp_path, hist):
    _check_png(M.plot_learning_curve(hist, tmp_path / "lc.png"))


def test_gallery_empty(tmp_path):
    _check_png(gallery(np.zeros((0, 3, 100, 100), np.uint8), [], tmp_path / "g0.png"))
    _check_png(gallery([], [], tmp_path / "g0b.png", title="worst errors"))


def test_gallery_partial_last_row(tmp_path):
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (5, 3, 100, 100), dtype=np.uint8)
    caps = [f"true {i % 2}, p1={i / 10:.2f}" for i in range(5)]
    w5, h5 = _check_png(gallery(imgs, caps, tmp_path / "g5.png", ncols=4, title="t"))
    w4, h4 = _check_png(gallery(imgs[:4], caps[:4], tmp_path / "g4.png", ncols=4, title="t"))
    assert w5 == w4  # same number of columns
    assert h5 > h4  # the fifth image opens a second row


def test_gallery_caption_mismatch_raises(tmp_path):
    with pytest.raises(ValueError):
        gallery(np.zeros((2, 3, 8, 8), np.uint8), ["a"], tmp_path / "g.png")


def test_plots_are_deterministic(tmp_path, toy):
    a = M.plot_reliability(*toy, tmp_path / "a.png")
    b = M.plot_reliability(*toy, tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()
