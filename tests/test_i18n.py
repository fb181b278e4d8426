"""The report's text, written once per language: the templates hold the structure and the English
(gettext messages), report_templates/locale/fr/LC_MESSAGES/messages.po the French.

A message missing from the catalogue, or left fuzzy or empty there, would print in English in the
French report without any error: these tests are what catches it. The rendered reports are checked
in tests/test_report.py (test_each_language_has_its_own_text), on the quick study it renders.
"""

from __future__ import annotations

import configparser
import re

import pytest
from conftest import REPO

babel = pytest.importorskip("babel")

TEMPLATES = REPO / "report_templates"
# the inline switch the catalogue replaced: {% if fr %}, "..." if lang == "fr" else "...", {% set fr = ... %}
SWITCH = re.compile(r"\bif (not )?fr\b|\blang\s*[!=]=|\bset fr\b")


def extracted() -> dict:
    """msgid -> where, for every message of the templates, as `pybabel extract -F babel.cfg` (README.md) finds them."""
    from babel.messages.extract import extract_from_file
    from babel.util import pathmatch

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "babel.cfg")
    found = {}
    for section in cfg.sections():
        method, pattern = (part.strip() for part in section.split(":", 1))
        for path in sorted(TEMPLATES.rglob("*")):
            where = path.relative_to(REPO).as_posix()
            if path.is_file() and pathmatch(pattern, where):
                for lineno, msgid, _, _ in extract_from_file(method, str(path), options=dict(cfg[section])):
                    found.setdefault(msgid, f"{where}:{lineno}")
    return found


def french():
    from babel.messages.pofile import read_po

    from agestudy.report.render import catalogue_path

    with catalogue_path("fr").open("rb") as f:
        return read_po(f, locale="fr")


def test_french_catalogue_is_complete_and_current():
    wanted = extracted()
    assert len(wanted) > 300  # the extractor saw the templates' messages
    catalogue = french()
    entries = {m.id: m for m in catalogue if m.id}
    hint = "refresh the catalogue and translate (README.md, 'Editing the report's text')"
    missing = {msgid: where for msgid, where in wanted.items() if msgid not in entries}
    assert not missing, f"messages without a French entry, {hint}: {missing}"
    stale = [msgid for msgid in entries if msgid not in wanted]
    assert not stale and not catalogue.obsolete, f"entries no template uses any more, {hint}: {stale}"
    fuzzy = [m.id for m in entries.values() if m.fuzzy]
    assert not fuzzy, f"fuzzy French entries (they would print in English), {hint}: {fuzzy}"
    strings = {m.id: m.string if isinstance(m.string, tuple) else (m.string,) for m in entries.values()}
    empty = [msgid for msgid, forms in strings.items() if not all(forms)]
    assert not empty, f"untranslated French entries (they would print in English): {empty}"
    # the same %(name)s placeholders on both sides (Babel's own checks)
    errors = [(m.id, [str(e) for e in errs]) for m, errs in catalogue.check()]
    assert not errors, errors


def test_templates_hold_no_language_switch():
    for path in sorted(TEMPLATES.rglob("*.j2")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            assert not SWITCH.search(line), f"{path.relative_to(REPO)}:{n}: text goes in a gettext message: {line}"


def test_messages_are_markup_and_their_arguments_escaped():
    """Newstyle gettext under autoescape: the message's tags stay tags, the values put in it are escaped."""
    from agestudy.report.render import make_env

    template = '{{ _("Run <code>%(run_id)s</code> logged no curve.", run_id=x) }}'
    for lang, text in (("fr", "Le run <code>&lt;b&gt;</code> n'a enregistré aucune courbe."),
                       ("en", "Run <code>&lt;b&gt;</code> logged no curve.")):
        assert make_env(lang).from_string(template).render(x="<b>") == text


def test_plurals_follow_each_language():
    from agestudy.report.render import make_env

    template = '{{ ngettext("%(num)s trial", "%(num)s trials", n) }}'
    assert [make_env("fr").from_string(template).render(n=n) for n in (0, 1, 2)] == ["0 essai", "1 essai", "2 essais"]
    assert [make_env("en").from_string(template).render(n=n) for n in (0, 1, 2)] == ["0 trials", "1 trial", "2 trials"]
