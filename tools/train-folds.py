"""Train chosen folds of one configuration and print each fold's held-out scores: the folds of a
cross-validated study, run as separate processes side by side (e.g. on one GPU, which one small
network leaves mostly idle), with nothing logged to MLflow.

    python tools/train-folds.py --data ROOT --fold 0 --fold 1 --train-images 280000
    python tools/train-folds.py --data ROOT --test --seed 1     # train/ as agestudy.train splits it; test/

It takes agestudy.train's training options (``--help`` lists them), with their defaults.

Each fold is trained exactly as the cv_accuracy objective trains it (``TrainConfig.fold``, the same
folds for the same seed, one validation per epoch, only the last one scores the fold) and prints one
JSON line: fold, validation accuracy, ROC AUC and log loss, seconds, device and precision. With
--test, the configuration's own split of train/ is trained, as ``agestudy.train`` does, and test/
is scored: a final measurement, never a way to choose. Each --view adds the scores of the same model
through that test-time view (e.g. ``ten``: five crops and their mirrors) to the line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields, replace

from agestudy import device as devices
from agestudy.cli import HelpFormatter
from agestudy.config import TrainConfig
from agestudy.data import load_data
from agestudy.engine import evaluate, fit
from agestudy.errors import UserError, cli_entry
from agestudy.predict import view_size
from agestudy.runs import TEACHER_PREFIX, VAL_ACC, VAL_AUC, VAL_LOSS
from agestudy.train import add_training_options, config_from_args


def progress_printer(name: str, epochs: int, points: int = 10):
    """An on_validation callback that prints one line to stderr at about ``points`` evenly spaced
    epochs (a fold can train for an hour on a CPU): epoch, validation accuracy so far, time since
    the start. It never stops training."""
    start, printed = time.perf_counter(), 0

    def on_validation(step: int, epoch: int, scores: dict) -> bool:
        nonlocal printed
        done = epoch + 1
        if done > printed and (done * points // epochs > printed * points // epochs or done == epochs):
            printed = done
            print(f"{name}: epoch {done}/{epochs}, val_acc {scores['acc']:.4f}, {time.perf_counter() - start:.0f} s",
                  file=sys.stderr, flush=True)
        return False
    return on_validation


@cli_entry
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/train-folds.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--data", required=True, help="lab-layout folder")
    parser.add_argument("--cache-dir", help="decode cache folder")
    parser.add_argument("--folds", type=int, default=5, help="folds of the cross-validation")
    parser.add_argument("--fold", type=int, action="append", default=[], help="fold to train (repeatable)")
    parser.add_argument("--test", action="store_true", help="train as agestudy.train does and score test/")
    parser.add_argument("--view", action="append", default=[],
                        help="also score the held-out images (or test/) through this test-time view of "
                             "agestudy.predict: centre, centre+mirror, five, ten or crops(N) (repeatable)")
    add_training_options(parser.add_argument_group("model and training (as agestudy.train; CV folds validate "
                                                    "once an epoch unless --evals-per-epoch sets another count)"))
    args = parser.parse_args(argv)
    if not args.fold and not args.test:
        raise UserError("nothing to train: give --fold K (repeatable) or --test")
    if any(not 0 <= k < args.folds for k in args.fold):
        raise UserError(f"--fold must be between 0 and {args.folds - 1}")
    for view in args.view:
        try:
            view_size(view)
        except ValueError as err:
            raise UserError(f"--view: {err}") from None
    given = config_from_args(args)  # checked before the data is loaded
    defaults = TrainConfig()
    changes = {f.name: getattr(given, f.name) for f in fields(TrainConfig)
               if getattr(given, f.name) != getattr(defaults, f.name)}
    device = devices.select_device(given.device)
    devices.configure_threads()
    data = load_data(args.data, args.cache_dir, progress=False, verbose=False)
    jobs = [("fold", k) for k in args.fold] + ([("test", None)] if args.test else [])
    for kind, k in jobs:
        cfg = replace(given, evals_per_epoch=1) if kind == "fold" and "evals_per_epoch" not in changes else given
        train, val = cfg.fold(data.train, args.folds, k) if kind == "fold" else cfg.split(data.train)
        start = time.perf_counter()
        result = fit(cfg, train, val, log=lambda metrics, step: None, progress=False,
                     on_validation=progress_printer(f"fold {k}" if kind == "fold" else "test",
                                                    cfg.resolved(device, len(train)).epochs))
        seconds = time.perf_counter() - start
        line = {"fold": k if kind == "fold" else "test", "set": changes,
                "device": device.type, "precision": result.precision,
                "seconds": round(seconds, 1), "images_per_second": round(result.images_per_second)}
        if val is not None:
            line.update(val_acc=result.final_val_acc, val_auc=result.final_val_auc,
                        val_loss=result.history[VAL_LOSS][-1][1] if VAL_LOSS in result.history else None)
            if TEACHER_PREFIX + VAL_ACC in result.history:  # --distill: the teacher's final scores on the same faces
                measures = (("val_acc", VAL_ACC), ("val_auc", VAL_AUC), ("val_loss", VAL_LOSS))
                line["teacher"] = {key: result.history[TEACHER_PREFIX + metric][-1][1] for key, metric in measures}
        if kind == "test":
            scores = evaluate(result.model, data.test.images, data.test.labels, cfg.augment(),
                              device, result.precision)
            line.update(test_acc=scores["acc"], test_auc=scores["auc"], test_loss=scores["loss"])
        scored = data.test if kind == "test" else val
        if args.view and scored is not None:  # the same model through other test-time views
            line["views"] = {view: evaluate(result.model, scored.images, scored.labels, cfg.augment(), device,
                                            result.precision, view) for view in args.view}
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
