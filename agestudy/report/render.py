"""From a ReportData to HTML and PDF: the Jinja2 environment, the number filters, French typography.

The text is written once per language in ``report_templates/`` (autoescaped: strings from
data are HTML-escaped); ``render_html`` renders each section's template on its own, so a
section that fails on an odd value becomes an error box instead of losing the report;
WeasyPrint turns the HTML into the PDF (``write_pdf``).
"""

from __future__ import annotations

import functools
import gettext
import io
import math
import re
from pathlib import Path

from agestudy import runs
from agestudy.errors import UserError
from agestudy.report.sections import SECTIONS
from agestudy.resources import resource_dir

TEMPLATES_DIR = resource_dir("report_templates")  # report_templates/ of the source tree, or the installed copy
LANGS = ("fr", "en")
SOURCE_LANG = "en"  # the templates' own text (the msgids); the other languages are catalogues
NBSP = "\u00a0"


# ----------------------------------------------------------------------------- number formatting

def _missing(x) -> bool:
    if x is None:
        return True
    try:
        return not math.isfinite(float(x))
    except Exception:  # noqa: BLE001 - strings, jinja2 Undefined: nothing to print
        return True


def make_filters(lang: str) -> dict:
    """Jinja filters that print numbers the way each language writes them (``None`` -> an em dash)."""
    comma = lang == "fr"

    def dec(text: str) -> str:
        return text.replace(".", ",") if comma else text

    def num(x, digits: int = 3) -> str:
        if _missing(x):
            return "—"
        return dec(f"{float(x):.{digits}f}")

    def pct(x, digits: int = 1, signed: bool = False) -> str:
        if _missing(x):
            return "—"
        sign = "+" if signed and float(x) > 0 else ""
        return dec(f"{sign}{100 * float(x):.{digits}f}") + NBSP + "%"

    def pts(x, digits: int = 1, signed: bool = True) -> str:
        """A difference of two proportions, in percentage points (``signed=False``: a size, such as a standard error)."""
        if _missing(x):
            return "—"
        return dec(f"{100 * float(x):{'+' if signed else ''}.{digits}f}") + NBSP + "pt"

    def integer(x) -> str:
        if _missing(x):
            return "—"
        text = f"{int(round(float(x))):,}"
        return text.replace(",", NBSP) if comma else text

    def sig(x, digits: int = 3) -> str:
        """Significant digits, scientific notation for very small or large values (learning rates)."""
        if _missing(x):
            return "—"
        x = float(x)
        if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e5):
            mantissa, exponent = f"{x:.{max(1, digits - 1)}e}".split("e")
            return dec(mantissa) + "·10" + "".join("⁻⁰¹²³⁴⁵⁶⁷⁸⁹"["-0123456789".index(c)] for c in str(int(exponent)))
        return dec(f"{x:.{digits}g}")

    def pvalue(p) -> str:
        if _missing(p):
            return "—"
        p = float(p)
        if p < 0.001:
            return "< " + dec("0.001")
        return dec(f"{p:.3f}")

    def seconds(x) -> str:
        if _missing(x):
            return "—"
        x = float(x)
        if x < 120:
            return dec(f"{x:.1f}") + NBSP + "s"
        minutes = x / 60
        if minutes < 120:
            return dec(f"{minutes:.1f}") + NBSP + "min"
        return dec(f"{minutes / 60:.1f}") + NBSP + "h"

    def value(x) -> str:
        """A hyperparameter value as the study recorded it."""
        if isinstance(x, bool):
            return ("oui" if x else "non") if comma else ("yes" if x else "no")
        if isinstance(x, float):
            return sig(x, 3)
        return str(x)

    return {"num": num, "pct": pct, "pts": pts, "integer": integer, "sig": sig, "pvalue": pvalue,
            "seconds": seconds, "value": value}


# ----------------------------------------------------------------------------- rendering

def catalogue_path(lang: str) -> Path:
    return TEMPLATES_DIR / "locale" / lang / "LC_MESSAGES" / "messages.po"


@functools.cache
def translations(lang: str) -> gettext.NullTranslations:
    """The report's text in ``lang``: the templates' own for English, else its .po catalogue.

    The .po is compiled in memory once per process, so no .mo (a build product) is kept in the
    tree. Fuzzy and empty entries are left out, i.e. would print the English: tests/test_i18n.py
    keeps the catalogue complete.
    """
    if lang == SOURCE_LANG:
        return gettext.NullTranslations()
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with catalogue_path(lang).open("rb") as f:
        catalogue = read_po(f, locale=lang)
    mo = io.BytesIO()
    write_mo(mo, catalogue)
    mo.seek(0)
    return gettext.GNUTranslations(mo)


def make_env(lang: str):
    """The templates' Jinja2 environment in ``lang``: autoescaped, its numbers and its text in that language.

    newstyle gettext: ``_("... %(n)s", n=x)`` formats itself, and under autoescape the message
    (which may hold tags such as <strong>) counts as markup while only its arguments are escaped.
    """
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True,
                             undefined=jinja2.ChainableUndefined, lstrip_blocks=True,
                             extensions=["jinja2.ext.i18n"])
    env.install_gettext_translations(translations(lang), newstyle=True)
    env.filters.update(make_filters(lang))
    env.globals["runs"] = runs  # the run contract: templates name metrics as runs.TEST_ACCURACY, ...
    return env


def render_html(data, lang: str) -> str:
    import markupsafe

    if not (TEMPLATES_DIR / "base.html.j2").is_file():
        raise UserError(f"report templates not found in {TEMPLATES_DIR}: reinstall agestudy "
                        "(pip install . or pip install -e .)")

    env = make_env(lang)
    sections = []
    for n, name in enumerate(SECTIONS, start=1):
        try:
            sections.append(markupsafe.Markup(env.get_template(f"sections/{name}.html.j2").render(r=data, lang=lang)))
        except Exception as err:  # noqa: BLE001 - an odd value in one run must not cost the whole report
            sections.append(markupsafe.Markup(env.get_template("section_error.html.j2").render(
                r=data, lang=lang, n=n, error=f"{type(err).__name__}: {err}")))
    html = env.get_template("base.html.j2").render(r=data, lang=lang, sections=sections)
    return french_spacing(html) if lang == "fr" else html


_TAG = re.compile(r"(<[^>]*>)")
_BEFORE = re.compile(r" ([:;?!»])")


def french_spacing(html: str) -> str:
    """French typography: a no-break space before : ; ? ! » and after «, so they never start or end a line.

    Only in text between tags, never inside <style>, <code> or tag attributes.
    """
    out, skip = [], 0
    for part in _TAG.split(html):
        if part.startswith("<"):
            name = part[1:].split(None, 1)[0].rstrip(">").lower() if len(part) > 2 else ""
            if name in ("style", "code", "script"):
                skip += 1
            elif name in ("/style", "/code", "/script"):
                skip = max(0, skip - 1)
            out.append(part)
        elif skip:
            out.append(part)
        else:
            out.append(_BEFORE.sub(NBSP + r"\1", part).replace("« ", "«" + NBSP))
    return "".join(out)


def write_pdf(html: str, out: Path, base_url: Path) -> None:
    import logging

    import weasyprint

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    weasyprint.HTML(string=html, base_url=str(base_url)).write_pdf(str(out))
