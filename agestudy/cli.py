"""The ``agestudy`` command: one entry point for every step of the pipeline.

    agestudy train ...     = python -m agestudy.train ...
    agestudy tune ...      = python -m agestudy.tune ...      (the main job: study, refit, analyses)
    agestudy analyze ...   = python -m agestudy.analyze ...
    agestudy report ...    = python -m agestudy.report ...
    agestudy bench ...     = python -m agestudy.bench ...
    agestudy cyclegan ...  = python -m agestudy.cyclegan ...

Each subcommand is the module's own ``main`` (same options, same --help); this file only
dispatches, and holds the help formatter every CLI shares.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, what it does); the order is the pipeline's
COMMANDS = {
    "train": ("agestudy.train", "train one classifier and log it to MLflow"),
    "tune": ("agestudy.tune", "the main job: an Optuna study, the refit of its best trial, the analyses"),
    "analyze": ("agestudy.analyze", "answer the lab's questions about a finished run (logged beside it)"),
    "report": ("agestudy.report.__main__", "render the compte-rendu (PDF) from the runs"),
    "bench": ("agestudy.bench", "training throughput: notebook, tuned standard and agestudy loops"),
    "cyclegan": ("agestudy.cyclegan", "question 11: train a CycleGAN between the two age groups"),
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (unless the text already says it, or there is none:
    None, or off for a flag); descriptions and epilogs keep their line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agestudy", formatter_class=HelpFormatter,
        description="The CACD age-classification lab as tracked experiments. Each command is also "
                    "`python -m agestudy.<command>`; `agestudy <command> --help` lists its options.",
        epilog="commands:\n" + "\n".join(f"  {name:<9} {what}" for name, (_, what) in COMMANDS.items()),
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="command", help="one of: " + ", ".join(COMMANDS))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's own options (see its --help)")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        build_parser().print_help()
        return 0
    args = build_parser().parse_args(argv[:1])  # an unknown command: argparse's one-line error, exit 2
    module = importlib.import_module(COMMANDS[args.command][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
