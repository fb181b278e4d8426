"""python -m agestudy.report: the compte-rendu as a PDF (and HTML), from MLflow runs only."""

from __future__ import annotations

import argparse
import sys
import time

from agestudy.cli import HelpFormatter
from agestudy.errors import cli_entry
from agestudy.report import DEFAULT_OUT, LANGS, build_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agestudy.report", formatter_class=HelpFormatter,
        description="Render the lab's twelve answers into a PDF from MLflow runs (metrics, histories, artifacts); "
                    "nothing is retrained. With no argument: the latest study's final run (tag "
                    "agestudy.role=final). Run `python -m agestudy.analyze --run RUN_ID` first for the analysis "
                    "results (every question but 11, which reads `python -m agestudy.cyclegan`'s run).",
    )
    parser.add_argument("--experiment", default="agestudy", help="MLflow experiment (default: agestudy)")
    parser.add_argument("--study", help="take the latest final run of this study (e.g. default, quick)")
    parser.add_argument("--run", dest="run_id", help="report on this finished run (any run with a model/ artifact)")
    parser.add_argument("--out", help=f"PDF path (default: {DEFAULT_OUT['fr']}, or {DEFAULT_OUT['en']} with "
                                      "--lang en); figures go to an assets/ folder beside it")
    parser.add_argument("--lang", default="fr", choices=LANGS, help="language of the text (default: fr)")
    parser.add_argument("--html", action="store_true", help="also write the HTML beside the PDF")
    parser.add_argument("--tracking-uri", help="MLflow store (default sqlite:///mlruns/mlflow.db or "
                                               "$MLFLOW_TRACKING_URI)")
    return parser


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    result = build_report(out=args.out, lang=args.lang, experiment=args.experiment, study=args.study,
                          run_id=args.run_id, html=args.html, tracking_uri=args.tracking_uri)
    data = result["data"]
    print(f"report on run {result['run_id']} written to {result['pdf']}"
          + (f" and {result['html']}" if result["html"] else "") + f" in {time.perf_counter() - start:.1f} s")
    missing = data.unavailable()
    if missing:
        print(f"not available yet: {', '.join(missing)}: run `{data.analysis_command}`", file=sys.stderr)
    if data.synthetic:
        print("*** this report is on SYNTHETIC demo data: its numbers say nothing about real faces ***")
    return 0


if __name__ == "__main__":
    sys.exit(main())
