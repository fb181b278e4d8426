"""Q12: input optimisation: the images that maximise each class (analysis q12)."""

from __future__ import annotations

from agestudy.report.sections.sources import figure, read_analysis, table

SOURCES = {
    # list of rows, each with: name, target (0|1), objective, start, param, p_start, p_final
    "runs": table("q12/trajectories.json", "runs"),
    "images": figure("q12/images.png"),  # the optimised images, both classes
    "trajectories": figure("q12/trajectories.png", optional=True),
}


def build(ctx) -> dict:
    return read_analysis(ctx, "q12", SOURCES)
