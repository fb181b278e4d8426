"""The compte-rendu: the lab's twelve answers as a PDF, read from MLflow (never retrained, never recomputed).

    python -m agestudy.report                          # the latest study's final run -> report/compte-rendu.pdf
    python -m agestudy.report --lang en --html         # English, and the HTML beside the PDF
    python -m agestudy.report --run RUN_ID --out x.pdf

Flow (``build_report``): ``store.py`` finds the runs (the analysed run, its study, its best
trial, its analysis run) and downloads what is shown under ``<output folder>/assets/<run
id>/``; each ``sections/qNN_<name>.py`` builds one question's view model from them
(``r.sections.qNN`` in its template); ``render.py`` fills the Jinja2 templates of
``report_templates/`` and WeasyPrint turns the HTML into the PDF. Every number and figure is
one a run logged (the training run, its study, ``python -m agestudy.analyze`` for questions
1-10 and 12, ``python -m agestudy.cyclegan`` for question 11), which its caption or source
line names: the report computes nothing. The templates hold the structure and the English text
(gettext messages, Jinja2's i18n extension); the French text is the catalogue
``report_templates/locale/fr/LC_MESSAGES/messages.po`` (``render.translations``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from agestudy.errors import UserError
from agestudy.report.render import (
    LANGS,
    TEMPLATES_DIR,
    french_spacing,
    make_filters,
    render_html,
    write_pdf,
)
from agestudy.report.sections import Context, View, build_sections
from agestudy.report.store import (
    RunInfo,
    Store,
    find_analysis_run,
    find_best_trial,
    find_study_run,
    find_target_run,
)
from agestudy.runs import (
    DATA_FINGERPRINT_TAG,
    DEVICE_TAG,
    GIT_COMMIT_TAG,
    PRECISION_TAG,
    SYNTHETIC_TAG,
    open_store,
    redact_uri,
)

__all__ = ["DEFAULT_OUT", "LANGS", "TEMPLATES_DIR", "ReportData", "build_report", "french_spacing", "make_filters",
           "read_report", "render_html", "write_pdf"]

DEFAULT_OUT = {"fr": Path("report") / "compte-rendu.pdf", "en": Path("report") / "report-en.pdf"}
NO_STORE_HINT = ("run `python -m agestudy.tune` first "
                 "(or point --tracking-uri / MLFLOW_TRACKING_URI at your runs)")


@dataclass
class ReportData:
    """Everything the templates read: the title page's facts and, per question, ``sections["qNN"]``."""

    lang: str
    generated: str
    experiment: str
    tracking_uri: str
    run: RunInfo
    study: RunInfo | None
    best_trial: RunInfo | None
    analysis_run_id: str | None
    analysis_command: str
    data: dict
    synthetic: bool
    provenance: dict
    sections: dict[str, View]  # "q01" ... "q12"

    def unavailable(self) -> list[str]:
        """The analysis questions ("q1", ...) whose results the report could not find."""
        return [view.key for view in self.sections.values() if view.key and not view.available]


def _int_param(params: dict, key: str) -> int | None:
    try:
        return int(float(params[key]))
    except (KeyError, TypeError, ValueError):
        return None


def data_facts(run: RunInfo) -> dict:
    """The title page's data set: where, which fingerprint, images per split and class (the run's data.* params)."""
    p = run.params
    counts = {k: _int_param(p, f"data.{k}") for k in ("train_0", "train_1", "test_0", "test_1")}
    return {
        "root": p.get("data.root", ""),
        "fingerprint": p.get("data.fingerprint") or run.tags.get(DATA_FINGERPRINT_TAG, ""),
        "counts": counts,
        "n_train": (counts["train_0"] or 0) + (counts["train_1"] or 0),
        "n_test": (counts["test_0"] or 0) + (counts["test_1"] or 0),
        "n_train_used": _int_param(p, "data.n_train_used"),
        "n_val": _int_param(p, "data.n_val"),
        "skipped": _int_param(p, "data.skipped"),
        "converted": _int_param(p, "data.converted"),
    }


def provenance_facts(run: RunInfo) -> dict:
    """The title page's where and with what: git commit, device, precision, library versions, model."""
    tags = run.tags
    return {
        "git_commit": tags.get(GIT_COMMIT_TAG, ""),
        "device": tags.get(DEVICE_TAG, ""),
        "precision": tags.get(PRECISION_TAG, ""),
        "versions": {k.removeprefix("version."): v for k, v in sorted(tags.items()) if k.startswith("version.")},
        "model": run.params.get("model", ""),
    }


def read_report(client, experiment: str, out_dir: Path, assets: Path, lang: str, study: str | None = None,
                run_id: str | None = None, tracking_uri: str = "") -> ReportData:
    """Find the runs, then build the title page's facts and every section's view model."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None and not run_id:
        raise UserError(f"no final run found in experiment '{experiment}': run `python -m agestudy.tune` first "
                        "(the experiment does not exist in this MLflow store)")
    store = Store(client, assets, out_dir)
    run = find_target_run(store, exp.experiment_id if exp else "", experiment, study, run_id)
    if exp is None or exp.experiment_id != run.experiment_id:
        found = client.get_experiment(run.experiment_id)
        experiment = found.name if found else experiment
    ctx = Context(store=store, run=run, study=find_study_run(store, run), best_trial=find_best_trial(store, run),
                  analysis=find_analysis_run(store, run), data=data_facts(run), lang=lang)
    return ReportData(
        lang=lang,
        generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        experiment=experiment,
        tracking_uri=redact_uri(tracking_uri),
        run=run,
        study=ctx.study,
        best_trial=ctx.best_trial,
        analysis_run_id=ctx.analysis.id if ctx.analysis else None,
        analysis_command=f"python -m agestudy.analyze --run {run.id}",
        data=ctx.data,
        synthetic=run.tags.get(SYNTHETIC_TAG) == "true",
        provenance=provenance_facts(run),
        sections=build_sections(ctx),
    )


def build_report(out: Path | str | None = None, lang: str = "fr", experiment: str = "agestudy",
                 study: str | None = None, run_id: str | None = None, html: bool = False,
                 tracking_uri: str | None = None) -> dict:
    """Render the report; returns {"pdf": path, "html": path or None, "run_id": ..., "data": ReportData}."""
    if lang not in LANGS:
        raise UserError(f"--lang must be one of {', '.join(LANGS)}, not {lang!r}")
    out = Path(out) if out else DEFAULT_OUT[lang]
    if out.suffix.lower() != ".pdf":
        raise UserError(f"--out must end in .pdf: {out}")
    # a report only reads: a missing store is an error, never a new empty one
    client, uri = open_store(tracking_uri, missing_hint=NO_STORE_HINT)
    out = out.resolve()
    data = read_report(client, experiment, out.parent, out.parent / "assets", lang, study=study, run_id=run_id,
                       tracking_uri=uri)
    text = render_html(data, lang)
    out.parent.mkdir(parents=True, exist_ok=True)
    html_path = None
    if html:
        html_path = out.with_suffix(".html")
        html_path.write_text(text, encoding="utf-8")
    write_pdf(text, out, out.parent)
    return {"pdf": out, "html": html_path, "run_id": data.run.id, "data": data}

