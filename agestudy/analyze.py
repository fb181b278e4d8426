"""Answer the lab's questions about one trained model, logged to MLflow beside its run.

    python -m agestudy.analyze --run RUN_ID
    python -m agestudy.analyze --run RUN_ID --only q8,q9
    python -m agestudy.analyze --run RUN_ID --external photos/     # question 10 on your own photos

See agestudy/analyses/ for what each question measures.
"""

from __future__ import annotations

import argparse
import sys

from agestudy.cli import HelpFormatter
from agestudy.errors import cli_entry


def build_parser() -> argparse.ArgumentParser:
    from agestudy.analyses import QUESTIONS

    questions = "\n".join(f"  {q:<4} {title}" for q, (_, title) in QUESTIONS.items())
    parser = argparse.ArgumentParser(
        prog="python -m agestudy.analyze",
        description="Run the analyses that answer the lab's questions on the model of one MLflow run, and log "
                    "them to a new child run tagged agestudy.role=analysis: each question's numbers in a table "
                    "qN/metrics.json, a few headline numbers also as metrics qN/..., figures (PNG) under qN/. The "
                    "analysed run's tag agestudy.analysis_run then names that child. Each call makes a new child: "
                    "with --only, the other questions' results are copied over from the previous one, which "
                    "stays as it was.",
        formatter_class=HelpFormatter,
        epilog=f"questions:\n{questions}\n\n"
               "The data are reloaded from the run's data.root param (or --data). Find run ids with\n"
               "  mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db\n"
               "Example:\n"
               "  python -m agestudy.analyze --run 06ab2cd7... --external ../shared/data/external-faces",
    )
    parser.add_argument("--run", required=True, metavar="RUN_ID", help="MLflow run whose model/ artifact is analysed")
    parser.add_argument("--only", metavar="Q,Q", help="comma-separated questions to run, e.g. q8,q9 (default: all)")
    parser.add_argument("--external", metavar="DIR", help="photos for question 10: DIR/*.jpg, or DIR/0/ and DIR/1/ "
                                                          "for labelled ones (any size or format)")
    parser.add_argument("--data", metavar="DIR", help="data folder (default: the run's data.root param)")
    parser.add_argument("--cache-dir", help="decode cache folder (default ~/.cache/agestudy)")
    parser.add_argument("--tracking-uri", help="MLflow store (default sqlite:///mlruns/mlflow.db or "
                                               "$MLFLOW_TRACKING_URI)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to compute")
    parser.add_argument("--fresh", action="store_true",
                        help="do not copy the other questions' results from the previous analysis run: the new run "
                             "holds only the questions run now")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from agestudy import device as devices
    from agestudy.analyses import check_external, parse_questions, run_analyses
    from agestudy.runs import open_store

    parse_questions(args.only)  # mistakes in the arguments fail before anything is loaded
    check_external(args.external)
    _, uri = open_store(args.tracking_uri)  # an existing store only: the analysed run is in it
    devices.configure_threads()
    out = run_analyses(args.run, only=args.only, external=args.external, data_root=args.data,
                       cache_dir=args.cache_dir, device=args.device, fresh=args.fresh, progress=not args.quiet)
    print(f"analysis run {out['analysis_run_id']} (child of {args.run}; {uri})")
    if out["carried"]:
        print(f"  carried over from the previous analysis run: {', '.join(out['carried'])}")
    for q, values in out["results"].items():
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in list(values.items())[:8])
        print(f"  {q}: {shown}")
    if out["failed"]:
        for q, err in out["failed"].items():
            print(f"  {q}: FAILED: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
