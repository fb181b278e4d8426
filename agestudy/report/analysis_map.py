"""WHERE THE REPORT FINDS THE ANALYSES' RESULTS: the one mapping to keep in step with agestudy/analyses.

The analyses (``python -m agestudy.analyze --run RUN_ID``) log into a child run of the analysed
run (tag ``agestudy.role=analysis``); the analysed run points to it with the tag
``agestudy.analysis_run``. Each section of the report below reads what it needs through ONE
dict, ``Qn``: the keys on the left are the names the section template uses (fixed); the
values on the right say where each item lives in that analysis run (edit these):

    metric("q2_ci_low")                      the latest value of a metric of the analysis run
    figure("q2/p1_histograms.png")           an image artifact (downloaded next to the report)
    table("q1/structure_model.json")         a whole JSON artifact
    table("q1/structure_model.json", "rows") one entry of it ("a.b.c" walks nested objects)

An item that cannot be found (no analysis run yet, artifact or metric absent, key missing)
becomes ``None``; the section then prints a box "not available yet: run
``python -m agestudy.analyze --run RUN_ID``" instead of the item, and the report still
renders. ``optional=True`` marks items whose absence is not worth a box (the section simply
leaves them out). Nothing here is ever computed or invented: a value is exactly what the
analysis logged.

The values below are the names agestudy/analyses/q*.py log; tests/test_report.py names any
item that stops resolving. The shape each template expects is noted beside each key.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    kind: str  # "metric" | "figure" | "table"
    path: str  # metric name or artifact path inside the analysis run
    key: str | None = None  # for tables: dotted path inside the JSON document
    optional: bool = False


def metric(name: str, optional: bool = False) -> Source:
    return Source("metric", name, optional=optional)


def figure(path: str, optional: bool = False) -> Source:
    return Source("figure", path, optional=optional)


def table(path: str, key: str | None = None, optional: bool = False) -> Source:
    return Source("table", path, key, optional=optional)


# ----------------------------------------------------------------------------- Q1: structure
Q1 = {
    # list of rows, each a dict with: name, type, output_shape (list of ints or None), formula,
    # formula_symbols, parameters (int)
    "layers": table("q1/structure_model.json", "rows"),
    "total": metric("q1_model_parameters"),  # int: total parameters of the analysed model
    "trainable": metric("q1_model_trainable", optional=True),
    "buffers": metric("q1_model_buffers", optional=True),  # BatchNorm running statistics (not parameters)
    "model_name": table("q1/structure_model.json", "model_name", optional=True),  # str
    "input_shape": table("q1/structure_model.json", "input_shape", optional=True),  # [3, crop, crop]
    "baseline_layers": table("q1/structure_baseline.json", "rows", optional=True),  # same rows, lab's CNN
    "baseline_total": metric("q1_baseline_parameters", optional=True),
}

# ----------------------------------------------------------------------------- Q2: untrained network
Q2 = {
    "n_networks": metric("q2_n_networks"),  # int: untrained networks (seeds) measured
    "pooled_accuracy": metric("q2_pooled_accuracy"),  # float in [0, 1]
    "ci_low": metric("q2_ci_low"),  # 95 % interval of the pooled accuracy
    "ci_high": metric("q2_ci_high"),
    "p_value": metric("q2_binom_pvalue"),  # binomial test of H0: accuracy = 0.5
    "n_significant": metric("q2_n_significant", optional=True),  # networks with p < 0.05
    "accuracy_min": metric("q2_accuracy_min", optional=True),
    "accuracy_max": metric("q2_accuracy_max", optional=True),
    "majority_accuracy": metric("q2_majority_accuracy", optional=True),
    "trained_accuracy": metric("q2_trained_accuracy", optional=True),
    "histogram": figure("q2/p1_histograms.png"),  # histogram of predicted P(label 1)
    "accuracy_plot": figure("q2/accuracy.png", optional=True),  # per-seed accuracy with intervals
}

# ----------------------------------------------------------------------------- Q5: beyond accuracy
Q5 = {
    "auc_ci_low": metric("q5_auc_ci_low"),  # bootstrap 95 % interval of the ROC AUC
    "auc_ci_high": metric("q5_auc_ci_high"),
    "temperature": metric("q5_temperature", optional=True),  # temperature scaling factor
    "ece_after": metric("q5_ece_after", optional=True),
    "brier_after": metric("q5_brier_after", optional=True),
    "class0_recall": metric("q5_class0_recall", optional=True),
    "class1_recall": metric("q5_class1_recall", optional=True),
    "class0_precision": metric("q5_class0_precision", optional=True),
    "class1_precision": metric("q5_class1_precision", optional=True),
    "class0_margin_mean": metric("q5_class0_margin_mean", optional=True),  # mean of p1 - p0
    "class1_margin_mean": metric("q5_class1_margin_mean", optional=True),
    "class0_margin_var": metric("q5_class0_margin_var", optional=True),
    "class1_margin_var": metric("q5_class1_margin_var", optional=True),
    "margin_histograms": figure("q5/margin_histograms.png"),
    "reliability_after": figure("q5/reliability_after.png", optional=True),
}

# ----------------------------------------------------------------------------- Q7: RandomCrop
Q7 = {
    "crop_grid": figure("q7/random_crop_grid.png"),  # RandomCrop alone on a few training images
    # dict: status ("measured" | "not_run"), groups {"with"|"without": {"val_acc"|"test_acc"|"train_acc"|"gap":
    # {"n", "mean", "std"}}}, tests {"val_acc"|"test_acc": {"welch_t", "p_value"}}, command (str)
    "effect": table("q7/effect.json"),
    "effect_plot": figure("q7/effect.png", optional=True),
}

# ----------------------------------------------------------------------------- Q8: multi-crop
Q8 = {
    "centre_accuracy": metric("q8_centre_accuracy"),
    "multicrop_accuracy": metric("q8_multicrop_accuracy"),
    "multicrop_n": metric("q8_multicrop_n"),  # int: crops averaged
    "gain": metric("q8_gain"),  # multicrop - centre accuracy
    "gain_ci_low": metric("q8_gain_ci_low", optional=True),
    "gain_ci_high": metric("q8_gain_ci_high", optional=True),
    "mcnemar_p": metric("q8_mcnemar_p"),
    "mcnemar_b": metric("q8_mcnemar_b"),  # right with the centre crop only
    "mcnemar_c": metric("q8_mcnemar_c"),  # right with multi-crop only
    "tencrop_accuracy": metric("q8_tencrop_accuracy", optional=True),
    "curve": figure("q8/accuracy_vs_crops.png"),  # accuracy against the number of crops
}

# ----------------------------------------------------------------------------- Q9: extremes
Q9 = {
    # lists of rows, each with: rank, file, label, predicted, p1, p_true
    "worst": table("q9/extremes.json", "worst"),
    "best": table("q9/extremes.json", "best"),
    "cam_layer": table("q9/extremes.json", "cam_layer", optional=True),  # str: Grad-CAM feature map
    "worst_gallery": figure("q9/worst.png"),
    "best_gallery": figure("q9/best.png"),
}

# ----------------------------------------------------------------------------- Q10: external photos
Q10 = {
    # dict: status ("measured" | "no_external_photos"), message (str), n_photos, n_faces_found, n_no_face,
    # n_judged, accuracy, accuracy_ci_low, accuracy_ci_high (when judged), photos (list of rows with file,
    # label, status, p1, predicted, correct)
    "summary": table("q10/summary.json"),
    "crops": figure("q10/crops.png", optional=True),
    "no_face": figure("q10/no_face.png", optional=True),
}

# ----------------------------------------------------------------------------- Q12: input optimisation
Q12 = {
    # list of rows, each with: name, target (0|1), objective, start, param, p_start, p_final
    "runs": table("q12/trajectories.json", "runs"),
    "images": figure("q12/images.png"),  # the optimised images, both classes
    "trajectories": figure("q12/trajectories.png", optional=True),
}

SECTIONS = {"q1": Q1, "q2": Q2, "q5": Q5, "q7": Q7, "q8": Q8, "q9": Q9, "q10": Q10, "q12": Q12}
