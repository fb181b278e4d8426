"""Train chosen folds of one configuration and print each fold's held-out scores: the folds of a
cross-validated study, run as separate processes side by side (e.g. on one GPU, which one small
network leaves mostly idle), with nothing logged to MLflow.

    python tools/train-folds.py --data ROOT --fold 0 --fold 1 --set members=3 --set train_images=280000
    python tools/train-folds.py --data ROOT --test --set seed=1     # train/ as agestudy.train splits it; test/

Each fold is trained exactly as the cv_accuracy objective trains it (``TrainConfig.fold``, the same
folds for the same seed, one validation per epoch, only the last one scores the fold) and prints one
JSON line: fold, validation accuracy, ROC AUC and log loss, seconds, device and precision. With
--test, the configuration's own split of train/ is trained, as ``agestudy.train`` does, and test/
is scored: a final measurement, never a way to choose.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields

from agestudy import device as devices
from agestudy.config import TrainConfig
from agestudy.data import load_data
from agestudy.engine import evaluate, fit
from agestudy.errors import UserError, cli_entry
from agestudy.runs import VAL_LOSS


def overrides(pairs: list[str]) -> dict:
    """key=value pairs -> TrainConfig fields, each value converted to its field's type."""
    types = {f.name: type(f.default) for f in fields(TrainConfig)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.replace("-", "_")
        if not sep or key not in types:
            raise UserError(f"--set {pair!r}: expected FIELD=VALUE with a TrainConfig field ({', '.join(types)})")
        kind = types[key]
        out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out


@cli_entry
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="lab-layout folder")
    parser.add_argument("--folds", type=int, default=5, help="folds of the cross-validation")
    parser.add_argument("--fold", type=int, action="append", default=[], help="fold to train (repeatable)")
    parser.add_argument("--test", action="store_true", help="train as agestudy.train does and score test/")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a TrainConfig field (repeatable); CV folds default to evals_per_epoch=1")
    parser.add_argument("--cache-dir", help="decode cache folder")
    args = parser.parse_args(argv)
    if not args.fold and not args.test:
        raise UserError("nothing to train: give --fold K (repeatable) or --test")
    if any(not 0 <= k < args.folds for k in args.fold):
        raise UserError(f"--fold must be between 0 and {args.folds - 1}")
    changes = overrides(args.set)
    devices.configure_threads()
    data = load_data(args.data, args.cache_dir, progress=False, verbose=False)
    jobs = [("fold", k) for k in args.fold] + ([("test", None)] if args.test else [])
    for kind, k in jobs:
        cfg = TrainConfig(**{**({"evals_per_epoch": 1} if kind == "fold" else {}), **changes})
        train, val = cfg.fold(data.train, args.folds, k) if kind == "fold" else cfg.split(data.train)
        start = time.perf_counter()
        result = fit(cfg, train, val, log=lambda metrics, step: None, progress=False)
        seconds = time.perf_counter() - start
        line = {"fold": k if kind == "fold" else "test", "set": changes,
                "device": devices.select_device(cfg.device).type, "precision": result.precision,
                "seconds": round(seconds, 1), "images_per_second": round(result.images_per_second)}
        if val is not None:
            line.update(val_acc=result.final_val_acc, val_auc=result.final_val_auc,
                        val_loss=result.history[VAL_LOSS][-1][1] if VAL_LOSS in result.history else None)
        if kind == "test":
            scores = evaluate(result.model, data.test.images, data.test.labels, cfg.augment(),
                              devices.select_device(cfg.device), result.precision)
            line.update(test_acc=scores["acc"], test_auc=scores["auc"], test_loss=scores["loss"])
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
