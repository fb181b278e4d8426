"""Q10: photos from outside the data set: faces found, predictions, accuracy (analysis q10)."""

from __future__ import annotations

from agestudy.report.sections.q04_accuracy import ACCURACY, SELECTION
from agestudy.report.sections.sources import figure, read_analysis, table

SOURCES = {
    # dict: status ("measured" | "no_external_photos"), message (str), n_photos, n_faces_found, n_no_face,
    # n_judged, accuracy, accuracy_ci_low, accuracy_ci_high (when judged), photos (list of rows with file,
    # label, status, framing ("eyes" | "box"), p1, predicted, correct)
    "summary": table("q10/summary.json"),
    "crops": figure("q10/crops.png", optional=True),
    "no_face": figure("q10/no_face.png", optional=True),
    # analysis q4's, to set the photos' accuracy beside the test accuracy and the estimate the configuration
    # was chosen by (section 4 shows them in full)
    "selection": table(SELECTION, optional=True),
    "test_ci_low": table(ACCURACY, "ci_low", optional=True),
    "test_ci_high": table(ACCURACY, "ci_high", optional=True),
}


def build(ctx) -> dict:
    return read_analysis(ctx, "q10", SOURCES)
