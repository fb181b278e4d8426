"""Q1: the network's structure: the layer table with formulas and the parameter count (analysis q1)."""

from __future__ import annotations

from agestudy.report.sections.sources import metric, read_analysis, table
from agestudy.runs import MODEL_PARAMETERS, run_metric

SOURCES = {
    # list of rows, each a dict with: name, type, output_shape (list of ints or None), formula,
    # formula_symbols, parameters (int)
    "layers": table("q1/structure_model.json", "rows"),
    "total": metric("model_parameters"),  # int: total parameters of the analysed model
    "trainable": metric("model_trainable", optional=True),
    "buffers": metric("model_buffers", optional=True),  # BatchNorm running statistics (not parameters)
    "model_name": table("q1/structure_model.json", "model_name", optional=True),  # str
    "input_shape": table("q1/structure_model.json", "input_shape", optional=True),  # [3, crop, crop]
    "baseline_layers": table("q1/structure_baseline.json", "rows", optional=True),  # same rows, lab's CNN
    "baseline_total": metric("baseline_parameters", optional=True),
}


def build(ctx) -> dict:
    # the parameter count the training run logged itself, beside the analysis's table
    return {**read_analysis(ctx, "q1", SOURCES), "logged_parameters": run_metric(ctx.run.metrics, MODEL_PARAMETERS)}
