"""How a section names what it reads from the analysis run, and the reading itself.

The analyses (``python -m agestudy.analyze --run RUN_ID``) log into a child run of the analysed
run (tag ``agestudy.role=analysis``); the analysed run points to it with the tag
``agestudy.analysis_run``. A section lists its items in one dict, ``SOURCES``: the keys are
the names its template reads (``q.name``), the values say where each item lives in that
analysis run:

    metric("ci_low")                         one number of the question's table qN/metrics.json
                                             (what the analysis logged with ctx.log_metrics)
    figure("q2/p1_histograms.png")           an image artifact (downloaded next to the report);
                                             "{lang}" in the path becomes the report's language
    table("q1/structure_model.json")         a whole JSON artifact
    table("q1/structure_model.json", "rows") one entry of it ("a.b.c" walks nested objects)

An item that cannot be found (no analysis run yet, artifact or metric absent, key missing)
becomes ``None``; a section whose required items are missing shows a box "not available yet:
run ``python -m agestudy.analyze --run RUN_ID``" and the report still renders.
``optional=True`` marks items whose absence is not worth a box (a value the analysis may log
as null, or a figure it may not draw). Nothing is computed or invented: a value is exactly
what the analysis logged. tests/test_report.py names any item that stops resolving.
"""

from __future__ import annotations

from dataclasses import dataclass

from agestudy.runs import analysis_metrics_table, legacy_analysis_metric, logged_number, question_error_tag


@dataclass(frozen=True)
class Source:
    kind: str  # "metric" | "figure" | "table"
    path: str  # a number's name in the question's qN/metrics.json, or an artifact path inside the analysis run
    key: str | None = None  # for tables: dotted path inside the JSON document
    optional: bool = False


def metric(name: str, optional: bool = False) -> Source:
    return Source("metric", name, optional=optional)


def figure(path: str, optional: bool = False) -> Source:
    return Source("figure", path, optional=optional)


def table(path: str, key: str | None = None, optional: bool = False) -> Source:
    return Source("table", path, key, optional=optional)


def resolve(ctx, source: Source, question: str):
    """One item of question ``question`` ("q2") in the analysis run, or None."""
    analysis = ctx.analysis
    if source.kind == "metric":
        numbers = ctx.store.json(analysis.id, analysis_metrics_table(question))
        if isinstance(numbers, dict):
            return logged_number(numbers.get(source.path))
        # an analysis run from before qN/metrics.json: the number was a flat metric qN_name
        return logged_number(analysis.metrics.get(legacy_analysis_metric(question, source.path)))
    if source.kind == "figure":
        return ctx.store.figure(analysis.id, source.path.format(lang=ctx.lang))
    doc = ctx.store.json(analysis.id, source.path)
    if doc is None or not source.key:
        return doc
    for part in source.key.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def read_analysis(ctx, question: str, sources: dict[str, Source]) -> dict:
    """Every item of ``sources`` ("q7": the analysis question), and the status the 'not available' box reads.

    Status items: ``key`` (the question), ``run_id`` (the analysis run), ``available``,
    ``missing`` (required items not found), ``reason`` ("no_run" | "error" | "not_run" |
    "partial" | "") and ``error`` (why the question's analysis failed, when it did).
    """
    if ctx.analysis is None:
        return {**dict.fromkeys(sources), "key": question, "run_id": None, "available": False,
                "missing": list(sources), "reason": "no_run", "error": ""}
    items = {name: resolve(ctx, source, question) for name, source in sources.items()}
    missing = [name for name, source in sources.items() if items[name] is None and not source.optional]
    error = ctx.analysis.tags.get(question_error_tag(question)) or ""
    required = sum(not source.optional for source in sources.values())
    reason = "error" if error else "not_run" if len(missing) == required else "partial" if missing else ""
    return {**items, "key": question, "run_id": ctx.analysis.id, "available": not missing,
            "missing": missing, "reason": reason, "error": error}
