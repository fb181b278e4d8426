"""The twelve sections of the compte-rendu, in the order of the lab's questions.

Each ``qNN_<name>.py`` builds one view model, ``build(ctx) -> dict``, which its template
``report_templates/sections/qNN_<name>.html.j2`` reads as ``r.sections.qNN``. A section
that shows an analysis's results names where each item lives in the analysis run (its
``SOURCES``, see ``sources.py``); every number and figure is read from what a run logged,
nothing is computed here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from agestudy.report.store import RunInfo, Store

# the one list of sections: module agestudy/report/sections/<name>.py, template report_templates/sections/<name>.html.j2
SECTIONS = ("q01_structure", "q02_chance", "q03_learning_curves", "q04_accuracy", "q05_beyond_accuracy",
            "q06_hyperparameters", "q07_random_crop", "q08_multicrop", "q09_extremes", "q10_external",
            "q11_cyclegan", "q12_input_optimisation")


@dataclass
class Context:
    """What a section builder reads: the store, the analysed run and the runs around it."""

    store: Store
    run: RunInfo  # the analysed run
    study: RunInfo | None  # its study run
    best_trial: RunInfo | None  # on a final run: the trial it refits
    analysis: RunInfo | None  # its analysis run (python -m agestudy.analyze)
    data: dict  # the run's data set as the title page shows it: root, fingerprint, counts, n_train, n_test, ...
    lang: str


class View(dict):
    """A section's view model: ``view.name`` is the item (None when absent), as the templates read it."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self.get(name)


def section_key(name: str) -> str:
    """"q07_random_crop" -> "q07": the name templates read the view model by (r.sections.q07)."""
    return name.split("_", 1)[0]


def build_sections(ctx: Context) -> dict[str, View]:
    """Every section's view model, by key ("q01" ... "q12"), in order."""
    return {section_key(name): View(importlib.import_module(f"{__name__}.{name}").build(ctx)) for name in SECTIONS}
