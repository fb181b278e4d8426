"""The compte-rendu end to end: a tiny synthetic study (real tuner), its analyses when they exist, the PDF.

One module-scoped fixture runs ``python -m agestudy.tune --study quick`` on 80 + 16 synthetic
images (two trials, two epochs), adds an ``augmentation`` study run holding only a trial table
(for question 7's ablation), then ``python -m agestudy.analyze`` when that module exists,
then renders the report in French (CLI, with --html) and in English; the tests read the PDFs'
text with pypdf and the HTML.
"""

from __future__ import annotations

import ast
import csv
import html as htmllib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

pypdf = pytest.importorskip("pypdf")

SCRIPT_NAME = "<script>alert(1)<script>.jpg"  # a data file name (no "/" possible in a file name)
SCRIPT_RUN_NAME = "<script>alert(1)</script>"  # a tag value: the final run's name
# question 7's ablation table: an augmentation study's trials as agestudy.tune writes study/trials.csv
AUGMENTATION_TRIALS = """number,value,state,params_flip,params_padding,params_random_crop
0,0.70,COMPLETE,True,4,True
1,0.64,COMPLETE,True,4,False
2,0.74,COMPLETE,False,8,True
3,0.61,COMPLETE,False,0,False
4,0.10,PRUNED,True,8,True
"""


def _env(tmp: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "AGESTUDY_THREADS": "1", "OMP_NUM_THREADS": "1",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}?timeout=60"}


def _run(cmd: list[str], tmp: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *cmd], cwd=tmp, env=env or _env(tmp), capture_output=True, text=True,
                          timeout=timeout)


def pdf_text(path: Path) -> str:
    reader = pypdf.PdfReader(str(path))
    text = "\n".join(page.extract_text() or "" for page in reader.pages)
    return text.replace("\u00a0", " ").replace("\u202f", " ")


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\u00a0", " "))


def add_augmentation_study(client, experiment_id: str, final, tmp: Path) -> str:
    """An augmentation study run as agestudy.tune leaves it (tags, study/trials.csv), without training its trials."""
    from agestudy import runs

    tags = {runs.ROLE_TAG: runs.ROLE_STUDY, runs.STUDY_TAG: "augmentation", runs.OBJECTIVE_TAG: "val_acc",
            runs.DATA_FINGERPRINT_TAG: final.data.params["data.fingerprint"]}
    run_id = client.create_run(experiment_id, tags=tags, run_name="augmentation").info.run_id
    table = tmp / "augmentation" / "trials.csv"
    table.parent.mkdir()
    table.write_text(AUGMENTATION_TRIALS)
    client.log_artifact(run_id, str(table), artifact_path=runs.STUDY_TRIALS.rsplit("/", 1)[0])
    client.set_terminated(run_id)
    return run_id


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from agestudy.data.synthetic import generate

    tmp = tmp_path_factory.mktemp("report")
    data = tmp / "data"
    generate(data, per_class=40, seed=0)
    # one test image gets a hostile name: it must come out escaped wherever the report lists files
    victim = sorted((data / "test" / "1").iterdir())[0]
    victim.rename(victim.with_name(SCRIPT_NAME))

    tune = _run(["-m", "agestudy.tune", "--study", "quick", "--data", str(data), "--n-trials", "2",
                 "--storage", str(tmp / "quick.journal"), "--cache-dir", str(tmp / "cache"), "--quiet"], tmp)
    assert tune.returncode == 0, f"the tuner failed:\n{tune.stderr[-3000:]}"

    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp / 'mlflow.db'}?timeout=60"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("agestudy")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    final = next(r for r in runs if r.data.tags.get("agestudy.role") == "final")
    trial = next(r for r in runs if r.data.tags.get("agestudy.role") == "trial")
    augmentation = add_augmentation_study(client, exp.experiment_id, final, tmp)

    analysed = None
    if importlib.util.find_spec("agestudy.analyze") is not None:
        done = _run(["-m", "agestudy.analyze", "--run", final.info.run_id, "--cache-dir", str(tmp / "cache"),
                     "--quiet"], tmp)
        analysed = done.returncode == 0
        if not analysed:
            print(f"agestudy.analyze failed (the report still renders):\n{done.stderr[-2000:]}")
    # question 11: a tiny CycleGAN judged by the final run
    gan = _run(["-m", "agestudy.cyclegan", "--data", str(data), "--judge", final.info.run_id, "--size", "32",
                "--width", "4", "--blocks", "1", "--disc-width", "4", "--epochs", "2", "--batch-size", "8",
                "--samples", "2", "--cache-dir", str(tmp / "cache"), "--quiet"], tmp)
    assert gan.returncode == 0, f"agestudy.cyclegan failed:\n{gan.stderr[-3000:]}"
    gan_run = next(r for r in client.search_runs([exp.experiment_id], max_results=100)
                   if r.data.tags.get("agestudy.role") == "cyclegan")
    client.set_tag(final.info.run_id, "mlflow.runName", SCRIPT_RUN_NAME)

    start = time.perf_counter()
    fr = _run(["-m", "agestudy.report", "--html"], tmp)
    seconds = time.perf_counter() - start
    assert fr.returncode == 0, f"the report failed:\n{fr.stderr[-3000:]}"

    from agestudy.report import build_report

    en = build_report(out=tmp / "report" / "en" / "report.pdf", lang="en", html=True, tracking_uri=uri)
    return {"tmp": tmp, "final": final, "trial": trial, "gan": gan_run, "client": client, "uri": uri,
            "analysed": analysed, "augmentation": augmentation, "en_data": en["data"],
            "fr_pdf": tmp / "report" / "compte-rendu.pdf", "fr_html": tmp / "report" / "compte-rendu.html",
            "en_pdf": en["pdf"], "en_html": en["html"], "seconds": seconds, "stdout": fr.stdout}


def test_cli_writes_pdf_and_html_fast(study):
    assert study["fr_pdf"].is_file() and study["fr_pdf"].stat().st_size > 10_000
    assert study["fr_html"].is_file()
    assert study["final"].info.run_id in study["stdout"]
    assert study["seconds"] < 60, f"the report took {study['seconds']:.0f} s from existing runs"


def test_twelve_numbered_answers_in_the_pdf(study):
    text = squash(pdf_text(study["fr_pdf"]))
    headings = re.findall(r'<h2 class="question" id="q(\d+)">(.*?)</h2>', study["fr_html"].read_text(), re.S)
    assert [int(n) for n, _ in headings] == list(range(1, 13))
    position = 0
    for n, title in headings:
        plain = squash(htmllib.unescape(re.sub(r"<[^>]+>", "", title))).strip()
        assert plain.startswith(f"{n}. ")
        found = text.find(plain, position)
        assert found >= 0, f"heading {plain!r} missing from the PDF text (or out of order)"
        position = found
    # accents survive the PDF (DejaVu fonts)
    assert "Structure du réseau" in text and "Table des matières" in text and "Vieillir et rajeunir" in text


def test_section_four_prints_the_runs_accuracy(study):
    text = squash(pdf_text(study["fr_pdf"]))
    section = text[text.rindex("4. Exactitude finale sur test"):]  # the heading, not its line in the contents
    match = re.search(r"Exactitude sur test/ ?: ?(\d+),(\d+) ?%", section)
    assert match, section[:500]
    printed = float(f"{match.group(1)}.{match.group(2)}")
    decimals = len(match.group(2))
    metric = study["final"].data.metrics["test/accuracy"]
    assert printed == round(100 * metric, decimals)
    # the interval is there too, and the run that gave the number is named
    assert "Wilson" in section[:800]
    assert study["final"].info.run_id in section[:1500]


def test_every_image_exists(study):
    for html_path in (study["fr_html"], study["en_html"]):
        page = html_path.read_text()
        sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
        assert len(sources) >= 6, sources
        for src in sources:
            assert (html_path.parent / htmllib.unescape(src)).is_file(), src
        # every figure names its run
        for caption in re.findall(r"<figcaption>(.*?)</figcaption>", page, re.S):
            assert re.search(r"[0-9a-f]{32}", caption) or "aucun run" in caption or "no run" in caption, caption


def test_strings_from_data_are_escaped(study):
    page = study["fr_html"].read_text()
    assert "<script" not in page.lower()
    assert htmllib.escape(SCRIPT_RUN_NAME, quote=False) in page  # the run name, on the title page
    assert htmllib.escape(SCRIPT_NAME, quote=False) in page  # the file name, in the question 9 ranking
    assert SCRIPT_RUN_NAME in pdf_text(study["fr_pdf"])  # shown as text, not run


def test_english_headings(study):
    text = squash(pdf_text(study["en_pdf"]))
    for heading in ("Contents", "1. Network structure", "4. Final test accuracy", "12. Input optimisation"):
        assert heading in text
    assert "Table des matières" not in text and "Structure du réseau" not in text
    assert "WARNING: SYNTHETIC DATA" in text


def test_each_language_has_its_own_text(study):
    """The templates' English and the French catalogue each reach their own report, none of the other's."""
    pages = {lang: squash(htmllib.unescape(study[f"{lang}_html"].read_text())) for lang in ("fr", "en")}
    for fr, en in (("Ce que fait RandomCrop.", "What RandomCrop does."),  # q7: a message with arguments
                   ("les poids sont tirés au hasard", "the weights are random"),  # q2: a {% trans %} block
                   ("Les limites", "Limits"),  # q11
                   ("Source : run", "Source: run"),  # macros.html.j2
                   ("Compte-rendu : classer l'âge", "Report: classifying the age")):  # base.html.j2
        assert fr in pages["fr"] and en not in pages["fr"], fr
        assert en in pages["en"] and fr not in pages["en"], en
    # the Q7 paragraph in full, with the run's numbers in it
    assert re.search(r"chaque image de 100×100 est bordée de \d+ pixels noirs, puis on en découpe un carré de "
                     r"(\d+)×\1 à une position tirée au hasard", pages["fr"])
    assert re.search(r"each 100×100 image gets a border of \d+ black pixels, then a (\d+)×\1 square is cut out",
                     pages["en"])


def test_synthetic_warning_and_title_page(study):
    first = squash(pypdf.PdfReader(str(study["fr_pdf"])).pages[0].extract_text()).replace("\u00a0", " ")
    assert "DONNÉES SYNTHÉTIQUES" in first
    final = study["final"]
    for value in (final.info.run_id, final.data.params["data.fingerprint"], final.data.tags["mlflow.parentRunId"]):
        assert value in first
    commit = final.data.tags.get("mlflow.source.git.commit")
    if commit:
        assert commit in first


def test_title_page_renders_to_png_with_the_red_warning(study, tmp_path):
    """A page as pixels (pdftoppm): not blank, and the synthetic-data box is there in red."""
    import shutil

    import numpy as np
    from PIL import Image

    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    subprocess.run(["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "1", str(study["fr_pdf"]), str(tmp_path / "p")],
                   check=True, timeout=60)
    page = np.asarray(Image.open(next(tmp_path.glob("p*.png"))).convert("RGB")).astype(int)
    assert (page.sum(axis=2) < 600).mean() > 0.01  # ink on the page
    red = (page[..., 0] > 150) & (page[..., 1] < 80) & (page[..., 2] < 80)
    assert red.sum() > 50  # the warning's red border and text


def test_analysis_sections_found_when_analysed(study):
    """When the analyses ran, every item of the sections' SOURCES (agestudy/report/sections/) is found in MLflow."""
    if not study["analysed"]:
        pytest.skip("agestudy.analyze is absent or failed: the analysis sections show 'not available' boxes")
    from agestudy.report import build_report

    data = build_report(out=study["tmp"] / "report" / "check" / "x.pdf", tracking_uri=study["uri"])["data"]
    missing = {k: view.missing for k, view in data.sections.items() if view.missing}
    assert not missing, f"the sections' SOURCES name items the analysis run does not have: {missing}"
    assert data.unavailable() == []
    assert "Pas encore disponible" not in study["fr_html"].read_text()


def test_report_on_a_trial_run_says_what_is_missing(study):
    from agestudy.report import build_report

    trial_id = study["trial"].info.run_id
    out = build_report(out=study["tmp"] / "report" / "trial" / "trial.pdf", lang="en", run_id=trial_id, html=True,
                       tracking_uri=study["uri"])
    text = squash(pdf_text(out["pdf"]))
    assert "Not available yet" in text
    assert f"python -m agestudy.analyze --run {trial_id}" in text
    assert "has no test/accuracy metric" in text


def test_section_eleven_shows_the_judged_cyclegan(study, tmp_path):
    text = squash(pdf_text(study["fr_pdf"]))
    section = text[text.rindex("11. Vieillir et rajeunir"):text.rindex("12. Optimisation de l'entrée")]
    gan = study["gan"]
    assert "Mesuré sur ces données" in section and gan.info.run_id in section
    assert study["final"].info.run_id in section  # the judge, named
    table = json.loads(Path(study["client"].download_artifacts(gan.info.run_id, "judge/judge.json",
                                                              str(tmp_path))).read_text())
    for group in ("young", "old"):  # the rise fractions, printed as the judge logged them
        printed = f"{100 * table[group]['rise_fraction']:.1f}".replace(".", ",") + " %"
        assert printed in section, (printed, section[:2000])
    page = study["fr_html"].read_text()
    for artifact in ("judge/grid.png", "judge/probabilities.png", "plots/losses.png"):
        assert f"assets/{gan.info.run_id}/{artifact}" in page


def test_section_eleven_without_a_run_says_what_to_run():
    from agestudy.report.render import make_env

    env = make_env("en")
    command = "python -m agestudy.cyclegan --data ROOT --judge abc"
    page = env.get_template("sections/q11_cyclegan.html.j2").render(
        r={"sections": {"q11": {"run": None, "command": command}}, "analysis_command": ""}, lang="en")
    assert "Not measured yet" in page and command in page and "Cycle consistency" in page


def test_no_runs_exits_2_with_what_to_run(tmp_path):
    env = _env(tmp_path)
    missing = _run(["-m", "agestudy.report"], tmp_path, timeout=120, env=env)
    assert missing.returncode == 2
    assert "python -m agestudy.tune" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "mlflow.db").exists()  # a report never creates a store

    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").create_experiment("agestudy")
    empty = _run(["-m", "agestudy.report"], tmp_path, timeout=120, env=env)
    assert empty.returncode == 2
    assert empty.stderr.strip() == ("error: no final run found in experiment 'agestudy': "
                                    "run `python -m agestudy.tune` first")


def test_wilson_interval_and_effects():
    from agestudy.analyses.stats import ablation_groups, hyperparameter_effects, wilson_interval

    lo, hi = wilson_interval(0.8, 100)
    assert lo == pytest.approx(0.7112, abs=1e-4) and hi == pytest.approx(0.8666, abs=1e-4)
    rows = [{"state": "COMPLETE", "value": str(0.5 + 0.04 * i), "params_lr": str(1e-4 * 2 ** i),
             "params_flip": str(i % 2 == 0)} for i in range(8)]
    rows.append({"state": "PRUNED", "value": "0.1", "params_lr": "1", "params_flip": "True"})
    effects = {e.name: e for e in hyperparameter_effects(rows, {"lr": 0.9, "flip": 0.1})}
    assert effects["lr"].kind == "numeric" and effects["lr"].direction == "up" and effects["lr"].rho == 1.0
    assert effects["lr"].diff == pytest.approx(0.16) and effects["lr"].n == 8
    assert effects["flip"].kind == "categorical" and effects["flip"].best is False
    groups = ablation_groups(rows, "flip")
    assert [g["value"] for g in groups] == [True, False] and sum(g["n"] for g in groups) == 8


# ----------------------------------------------------------------------------- one question, one place each

QUESTION_KEYS = [f"q{n:02d}" for n in range(1, 13)]
# question 11's CycleGAN run is its own analysis (python -m agestudy.cyclegan trains the generators and has
# agestudy/analyses/q11_cyclegan.py judge them in that run): the report reads it, analyze does not run it
ANSWERED_BY_THEIR_OWN_RUN = {"q11"}


@pytest.mark.parametrize("key", QUESTION_KEYS)
def test_question_is_whole(key):
    """Each question has its template, its section builder and (all but 11) its registered analysis."""
    from agestudy.analyses import QUESTIONS
    from agestudy.report.render import TEMPLATES_DIR
    from agestudy.report.sections import SECTIONS

    names = [name for name in SECTIONS if name.startswith(f"{key}_")]
    assert len(names) == 1, f"{key} is not listed once in agestudy/report/sections/__init__.py SECTIONS"
    name = names[0]
    assert (TEMPLATES_DIR / "sections" / f"{name}.html.j2").is_file(), f"no template sections/{name}.html.j2"
    module = importlib.import_module(f"agestudy.report.sections.{name}")
    assert callable(getattr(module, "build", None)), f"agestudy/report/sections/{name}.py has no build(ctx)"
    question = f"q{int(key[1:])}"  # the analyses' key: q7
    if key in ANSWERED_BY_THEIR_OWN_RUN:
        assert question not in QUESTIONS
        return
    assert question in QUESTIONS, f"no analysis registered for {question} in agestudy.analyses.QUESTIONS"
    analysis = QUESTIONS[question][0]
    assert analysis == f"{question}_{name.split('_', 1)[1]}", (analysis, name)  # q7_random_crop <-> q07_random_crop
    assert importlib.util.find_spec(f"agestudy.analyses.{analysis}") is not None, analysis


def test_the_report_package_imports_nothing_that_computes():
    """The report reads what runs logged: no statistics, no plotting, no model code, no analysis module."""
    package = REPO / "agestudy" / "report"
    forbidden = ("agestudy.analyses", "agestudy.plots", "agestudy.metrics", "agestudy.models", "agestudy.engine",
                 "agestudy.report.stats", "matplotlib", "numpy", "scipy", "torch", "sklearn")
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                if any(name == f or name.startswith(f"{f}.") for f in forbidden):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    assert not found, "the report must not compute (move it into an analysis):\n" + "\n".join(found)
    assert not (package / "stats.py").exists() and not (package / "collect.py").exists()


def test_every_figure_is_an_artifact_of_the_run_its_caption_names(study, tmp_path):
    client = study["client"]
    for html_path in (study["fr_html"], study["en_html"]):
        page = html_path.read_text()
        figures = re.findall(r'<figure[^>]*>\s*<img src="([^"]+)"[^>]*>\s*<figcaption>(.*?)</figcaption>', page, re.S)
        assert len(figures) == len(re.findall(r"<img ", page)) >= 6
        for src, caption in figures:
            match = re.fullmatch(r"assets/([0-9a-f]{32})/(.+)", htmllib.unescape(src))
            assert match, src
            run_id, artifact = match.groups()
            assert run_id in caption and artifact in caption, (src, caption)
            logged = Path(client.download_artifacts(run_id, artifact, str(tmp_path / run_id)))
            assert logged.read_bytes() == (html_path.parent / match.group(0)).read_bytes(), src


def _section(text: str, heading: str, next_heading: str) -> str:
    return text[text.rindex(heading):text.rindex(next_heading)]


def test_numbers_are_the_ones_runs_logged(study, tmp_path):
    """The sections print the numbers computed from the runs as the report computed them before the analyses did."""
    if not study["analysed"]:
        pytest.skip("agestudy.analyze failed: the analysis sections show 'not available' boxes")
    from agestudy.analyses.stats import ablation_groups, hyperparameter_effects, wilson_interval

    client, final = study["client"], study["final"]
    text = squash(pdf_text(study["fr_pdf"]))
    data = study["en_data"]

    # question 4: the Wilson interval of test/accuracy on data.test_0 + data.test_1 images
    n_test = int(final.data.params["data.test_0"]) + int(final.data.params["data.test_1"])
    low, high = wilson_interval(final.data.metrics["test/accuracy"], n_test)
    section = _section(text, "4. Exactitude finale sur test", "5. Au-delà de l'exactitude")
    interval = f"[{100 * low:.2f} % ; {100 * high:.2f} %]".replace(".", ",")
    assert interval in section, (interval, section[:600])
    assert data.sections["q04"].correct == round(final.data.metrics["test/accuracy"] * n_test)

    # question 6: the effects of the quick study's trials (there is no hyperparams study here)
    study_id = final.data.tags["mlflow.parentRunId"]
    rows = list(csv.DictReader(io.StringIO(Path(client.download_artifacts(
        study_id, "study/trials.csv", str(tmp_path / "q6"))).read_text())))
    q6 = data.sections["q06"]
    assert q6.source == "own" and q6.study.id == study_id
    importances = dict(q6.importances)
    expected = hyperparameter_effects(rows, importances)
    assert [e["name"] for e in q6.effects] == [e.name for e in expected]
    for shown, effect in zip(q6.effects, expected):
        assert (shown["diff"], shown["rho"], shown["direction"]) == pytest.approx((effect.diff, effect.rho,
                                                                                  effect.direction))

    # how the configuration was chosen (analysis q4, section 4): the best trial's validation accuracy, its
    # standard error on the trial's validation split, and the final run's test accuracy minus it
    from agestudy.analyses.stats import trial_value
    from agestudy.report.render import make_filters

    trial = client.get_run(final.data.tags["agestudy.best_trial_run"])
    p, n = trial.data.metrics["val/final_acc"], int(trial.data.params["data.n_val"])
    se, test = (p * (1 - p) / n) ** 0.5, final.data.metrics["test/accuracy"]
    chosen = data.sections["q04"].selection
    assert (chosen["source"], chosen["kind"], chosen["study"], chosen["estimate_run_id"]) == (
        "study", "validation", "quick", trial.info.run_id)
    assert (chosen["estimate"], chosen["se"], chosen["n_val"]) == pytest.approx((p, se, n))
    assert chosen["gap"] == pytest.approx(test - p) and chosen["within"] == (abs(test - p) <= 2 * se)
    fr, en = make_filters("fr"), make_filters("en")
    section = _section(text, "4. Exactitude finale sur test", "5. Au-delà de l'exactitude")
    for printed in (f"L'exactitude de validation du meilleur essai était de {fr['pct'](p)}",
                    f"erreur type de ±{fr['pts'](se, 1, False)}",
                    f"Exactitude sur test/ moins l'estimation : {fr['pts'](test - p)}", trial.info.run_id):
        assert printed.replace("\u00a0", " ") in section, (printed, section[-2500:])
    page = squash(htmllib.unescape(re.sub(r"<[^>]+>", "", study["en_html"].read_text())))
    n_fit, fraction = int(trial.data.params["data.n_train_used"]), float(trial.data.params["val_fraction"])
    assert (f"Each trial trained on {n_fit} images of train/ and was scored on the {n} others, held out for "
            f"validation ({en['pct'](fraction, 0)} of train/): there, one image weighs "
            f"{en['pts'](1 / n, 1, False)}.").replace("\u00a0", " ") in page
    assert (f"Test accuracy minus the estimate: {en['pts'](test - p)} ({en['pct'](test)} on test/ against "
            f"{en['pct'](p)}, the best trial's validation accuracy).").replace("\u00a0", " ") in page

    # how the study's trials compared (analysis q6, section 6): the completed trials within 2 standard errors
    # of the best trial's validation accuracy, on its validation split
    complete = {int(r["number"]): trial_value(r) for r in rows if r["state"] == "COMPLETE"}
    number = max(complete, key=complete.get)
    best_run = client.get_run(next(r["user_attrs_mlflow_run_id"] for r in rows if int(r["number"]) == number))
    best, n_best = complete[number], int(best_run.data.params["data.n_val"])
    noise = 2 * (best * (1 - best) / n_best) ** 0.5
    protocol = q6.protocol
    assert (protocol["kind"], protocol["best_trial"], protocol["n_complete"]) == ("validation", number, len(complete))
    assert protocol["noise"] == pytest.approx(noise)
    assert protocol["within_trials"] == sorted(k for k, v in complete.items() if v >= best - noise - 1e-12)
    section = _section(text, "6. Les hyperparamètres qui comptent", "7. RandomCrop")
    assert "Comment les essais ont été comparés" in section
    assert f"±{fr['pts'](noise, 1, False)}".replace("\u00a0", " ") in section, section[:2000]

    # question 7: the augmentation study's objective by value, printed per group
    rows = list(csv.DictReader(io.StringIO(AUGMENTATION_TRIALS)))
    section = _section(text, "7. RandomCrop", "8. Prédiction multi-crop")
    assert study["augmentation"] in section
    for name in ("random_crop", "padding", "flip"):
        for group in ablation_groups(rows, name):
            assert f"{100 * group['mean']:.1f} %".replace(".", ",") in section, (name, group)
    assert data.sections["q07"].groups["random_crop"] == [
        {**g, "std": pytest.approx(g["std"])} for g in ablation_groups(rows, "random_crop")]
    assert "Avec RandomCrop : 72,0 % (2 essais) ; sans : 62,5 % (2 essais)" in section
