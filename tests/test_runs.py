"""The MLflow run contract (agestudy/runs.py): one home for tag names and filters, quoting, redaction."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from agestudy import runs
from agestudy.errors import UserError
from agestudy.runs import find_runs, open_store, redact_uri

PACKAGE = Path(__file__).resolve().parents[1] / "agestudy"
TAG_LITERAL = re.compile(r"^agestudy\.[a-z][a-z0-9_]*$")


def _module_names() -> set[str]:
    """agestudy.X for every module and subpackage directly in the package: names for -m and importlib."""
    names = {f"agestudy.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return names | {f"agestudy.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}


def _package_nodes():
    """(file relative to the repo, AST node) for every node of the package's code except runs.py."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "runs.py":
            continue
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            yield where, node


def _tag_values() -> set[str]:
    return {v for k, v in vars(runs).items() if k.endswith("_TAG") and isinstance(v, str)}


def test_tag_names_and_filter_strings_live_only_in_runs_py():
    modules, tags = _module_names(), _tag_values()
    found = []
    for where, node in _package_nodes():
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            value = node.value
            # a whole string that is a tag name; "-m agestudy.tune" style module names are fine
            if TAG_LITERAL.match(value) and (value in tags or value not in modules):
                found.append(f"{where}:{node.lineno}: tag literal {value!r}")
        elif isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            # f"agestudy.{q}_error": a tag name built by hand
            if isinstance(head, ast.Constant) and head.value == "agestudy.":
                found.append(f"{where}:{node.lineno}: tag name built in an f-string")
        elif isinstance(node, ast.keyword) and node.arg == "filter_string":
            found.append(f"{where}:{node.value.lineno}: filter_string= (use runs.find_runs)")
    assert not found, "MLflow tag names and run filters belong in agestudy/runs.py:\n" + "\n".join(found)


# a metric name: a section, a slash, a name ("train/loss", "q8/gain"); artifact paths have a file extension
METRIC_LITERAL = re.compile(r"^(train|val|test|model|study|cv|judge|q\d+)/[A-Za-z0-9_]+$")
METRIC_PREFIXES = ("train/", "val/", "test/", "model/", "study/", "cv/", "judge/")
TEMPLATES = PACKAGE.parent / "report_templates"


def _reads_a_metric_by_literal(node) -> bool:
    """run.data.metrics["x"], run.metrics.get("x"), client.get_metric_history(run_id, "x")."""
    def literal(arg):
        return isinstance(arg, ast.Constant) and isinstance(arg.value, str)

    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "metrics":
        return literal(node.slice)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        func = node.func
        if func.attr == "get" and isinstance(func.value, ast.Attribute) and func.value.attr == "metrics":
            return bool(node.args) and literal(node.args[0])
        if func.attr == "get_metric_history":
            return any(literal(arg) for arg in node.args[1:])
    return False


def test_metric_names_live_only_in_runs_py():
    """Every metric name is written once, in agestudy/runs.py; the code and the templates read it from there."""
    found = []
    for where, node in _package_nodes():
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and METRIC_LITERAL.match(node.value):
            found.append(f"{where}:{node.lineno}: metric name {node.value!r}")
        elif isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            # f"train/{name}" (but not prose such as f"train/ has {n} images")
            if isinstance(head, ast.Constant) and re.match(r"^[a-z]+/[A-Za-z0-9_]*$", str(head.value)) \
                    and str(head.value).startswith(METRIC_PREFIXES) and len(node.values) > 1:
                found.append(f"{where}:{node.lineno}: metric name built in an f-string")
        if _reads_a_metric_by_literal(node):
            found.append(f"{where}:{node.lineno}: a metric read by a literal name")
    for path in sorted(TEMPLATES.rglob("*.j2")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if re.search(r"metrics(\.get\(|\[)\s*[\"']", line):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{n}: a metric read by a literal name")
    assert not found, "metric names belong in agestudy/runs.py:\n" + "\n".join(found)


def test_metric_names_have_sections_and_say_what_they_replace():
    from agestudy.analyses import QUESTIONS
    from agestudy.studies import OBJECTIVES

    names = {v for k, v in vars(runs).items() if k.isupper() and isinstance(v, str) and METRIC_LITERAL.match(v)}
    assert {runs.TRAIN_LOSS, runs.VAL_ACC, runs.TEST_ACCURACY, runs.MODEL_PARAMETERS, runs.STUDY_BEST_VALUE} <= names
    assert set(runs.LEGACY_METRICS) <= names | {runs.measure_metric(m) for m in runs.TEST_MEASURES}
    assert len(set(runs.LEGACY_METRICS.values())) == len(runs.LEGACY_METRICS)  # one old name each
    assert runs.TRAIN_LEARNING_RATE != "lr"  # the schedule must not clash with the param lr
    assert set(runs.OBJECTIVE_METRICS) == set(OBJECTIVES)  # the study files' words, each mapped to its curve
    assert set(runs.ANALYSIS_HEADLINES) <= set(QUESTIONS) and set(runs.ANALYSIS_SERIES) <= set(QUESTIONS)
    most = sum(map(len, runs.ANALYSIS_HEADLINES.values())) + sum(map(len, runs.ANALYSIS_SERIES.values()))
    assert most <= runs.MAX_ANALYSIS_METRICS
    assert runs.analysis_metric("q8", "gain") == "q8/gain" and runs.analysis_metrics_table("q8") == "q8/metrics.json"


def test_older_metric_names_are_still_read():
    old = {"test_accuracy": 0.8, "iterations": 12.0, "train/seconds": 3.0, "best_val_acc": float("nan")}
    assert runs.run_metric(old, runs.TEST_ACCURACY) == 0.8
    assert runs.run_metric(old, runs.TRAIN_SECONDS) == 3.0
    assert runs.run_metric(old, runs.VAL_BEST_ACC) is None and runs.run_metric(old, runs.TEST_ECE) is None
    assert runs.has_metric(old, runs.VAL_BEST_ACC) and not runs.has_metric(old, runs.TEST_ECE)
    current = runs.with_current_names(old)
    assert current[runs.TEST_ACCURACY] == 0.8 and current[runs.TRAIN_ITERATIONS] == 12.0 and current["iterations"]


def test_tag_values_are_the_ones_existing_stores_hold():
    # changing one of these loses every run logged before: the report and analyses stop finding them
    assert (runs.ROLE_TAG, runs.STUDY_TAG, runs.ANALYSIS_RUN_TAG, runs.BEST_TRIAL_RUN_TAG) == (
        "agestudy.role", "agestudy.study", "agestudy.analysis_run", "agestudy.best_trial_run")
    assert runs.question_error_tag("q8") == "agestudy.q8_error"
    assert (runs.ROLE_FINAL, runs.ROLE_TRIAL, runs.ROLE_STUDY, runs.ROLE_ANALYSIS, runs.ROLE_TRAIN) == (
        "final", "trial", "study", "analysis", "train")
    assert runs.MODEL_WEIGHTS == "model/state_dict.pt" and runs.MODEL_CONFIG == "model/config.json"
    assert runs.TEST_PREDICTIONS == "predictions/test_predictions.csv"
    assert runs.STUDY_TRIALS == "study/trials.csv"


def test_find_runs_filters_quotes_and_sorts_newest_first(tracking):
    client, uri = open_store(tracking)
    assert uri == tracking
    experiment = client.get_experiment_by_name("test").experiment_id

    started = iter(range(1_700_000_000_000, 1_800_000_000_000, 1000))  # distinct start times, in order

    def make(study, role, status="FINISHED", **tags):
        run = client.create_run(experiment, start_time=next(started),
                                tags={runs.ROLE_TAG: role, runs.STUDY_TAG: study, **tags})
        client.set_terminated(run.info.run_id, status=status)
        return run.info.run_id

    quoted = make("Alice's study", runs.ROLE_FINAL, **{runs.BEST_TRIAL_TAG: "3"})
    double = make('the "big" one', runs.ROLE_FINAL)
    older = make("plain", runs.ROLE_STUDY)
    newer = make("plain", runs.ROLE_STUDY)
    failed = make("plain", runs.ROLE_FINAL, status="FAILED")

    def ids(**kwargs):
        return [r.info.run_id for r in find_runs(client, [experiment], **kwargs)]

    assert ids(study="Alice's study") == [quoted]
    assert ids(study="Alice's study", role=runs.ROLE_FINAL, status="FINISHED",
               extra={runs.BEST_TRIAL_TAG: "3"}) == [quoted]
    assert ids(study="Alice's study", extra={runs.BEST_TRIAL_TAG: "4"}) == []
    assert ids(study='the "big" one') == [double]
    assert ids(study="plain", role=runs.ROLE_STUDY) == [newer, older]
    assert ids(study="plain", role=runs.ROLE_STUDY, max_results=1) == [newer]
    assert ids(study="plain", status="FAILED") == [failed]
    assert ids() == [failed, newer, older, double, quoted]  # no filter at all
    with pytest.raises(UserError, match="both kinds of quote"):
        find_runs(client, [experiment], study="it's \"odd\"")


def test_open_store_never_creates_a_missing_sqlite_store(tmp_path):
    db = tmp_path / "nowhere" / "mlflow.db"
    with pytest.raises(UserError, match=r"no MLflow store at .*mlflow\.db: run from the project folder"):
        open_store(f"sqlite:///{db}?timeout=60")
    with pytest.raises(UserError, match="run `python -m agestudy.tune` first$"):
        open_store(f"sqlite:///{db}", missing_hint="run `python -m agestudy.tune` first")
    assert not db.parent.exists()


def test_redact_uri_hides_credentials_and_sqlite_options():
    shown = redact_uri("postgresql://user:secret@db.example.org:5432/mlflow")
    assert "secret" not in shown and "user" not in shown
    assert shown == "postgresql://***@db.example.org:5432/mlflow"
    assert redact_uri("sqlite:////home/me/mlruns/mlflow.db?timeout=60") == "sqlite:////home/me/mlruns/mlflow.db"
    assert redact_uri("http://localhost:5000") == "http://localhost:5000"
    assert redact_uri("http://u:p@host:5000/path@x") == "http://***@host:5000/path@x"
    assert redact_uri("mlruns/optuna/default.journal") == "mlruns/optuna/default.journal"
    assert redact_uri("") == ""
