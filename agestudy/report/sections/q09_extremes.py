"""Q9: the most wrong and most right test images, with Grad-CAM (analysis q9; without it, the 'not available' box)."""

from __future__ import annotations

from agestudy.report.sections.sources import figure, read_analysis, table

SOURCES = {
    # lists of rows, each with: rank, file, label, predicted, p1, p_true
    "worst": table("q9/extremes.json", "worst"),
    "best": table("q9/extremes.json", "best"),
    "cam_layer": table("q9/extremes.json", "cam_layer", optional=True),  # str: Grad-CAM feature map
    "worst_gallery": figure("q9/worst.png"),
    "best_gallery": figure("q9/best.png"),
}


def build(ctx) -> dict:
    return read_analysis(ctx, "q9", SOURCES)
