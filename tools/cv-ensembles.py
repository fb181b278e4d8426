"""The CV accuracy of ensembles of a cross-validated study's configurations, from its stored fold models.

A cross-validated study (objective cv_accuracy) keeps one model per fold of each trial (the
fold runs' model/ artifacts), every configuration trained on the same folds. This re-predicts
each fold model on the fold it held out and averages the probabilities of several
configurations' models fold by fold: the cross-validated accuracy an ensemble of those networks
would have had, without training anything: how much the configurations' mistakes differ, and
which faces all of them get wrong (counted last). Only train/ is read. Configurations of one
study share its seed (the same initialisation and order of images), so their mistakes overlap
more than those of an ensemble's members, which differ in both: they gain less together than
independent networks usually do (measure those with --members in a study).

    python tools/cv-ensembles.py --data ROOT --tracking-uri sqlite:///a.db --tracking-uri sqlite:///b.db

Prints each configuration's recomputed CV accuracy (it equals the trial's logged cv/mean_acc),
then, for ensembles of 2, 3, ... configurations, the mean, lowest and highest CV accuracy over
the combinations (at most --combinations of them, drawn at random beyond that), the ensemble
of all of them, and how many held-out faces 0, 1, ... N of the N configurations got wrong.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from agestudy import device as devices
from agestudy.analyses import load_run_model
from agestudy.config import TrainConfig
from agestudy.data import load_data
from agestudy.errors import UserError, cli_entry
from agestudy.predict import evaluation_view, predict_proba
from agestudy.runs import FOLD_TAG, ROLE_FOLD, ROLE_TAG, STUDY_TAG, TRIAL_TAG, open_store


def fold_runs(client) -> dict[tuple, dict[tuple, object]]:
    """Finished fold runs by configuration (study, trial), each as {(folds, repeat, fold, seed): run}."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    found: dict[tuple, dict[tuple, object]] = {}
    for run in client.search_runs(experiments, f"tags.`{ROLE_TAG}` = '{ROLE_FOLD}' and attributes.status = 'FINISHED'",
                                  max_results=50_000):
        params, tags = run.data.params, run.data.tags
        fold = (int(params["cv.folds"]), int(params["cv.repeat"]), int(tags[FOLD_TAG]), int(params["seed"]))
        found.setdefault((tags[STUDY_TAG], int(tags[TRIAL_TAG])), {})[fold] = run
    return found


def complete(configurations: dict[tuple, dict]) -> dict[tuple, dict]:
    """The configurations whose every fold finished, on the folds most of them share (only models
    that held out the same faces can be averaged)."""
    def whole(runs):
        folds, repeats = next(iter(runs))[0], max(int(r.data.params["cv.repeats"]) for r in runs.values())
        return len(runs) == folds * repeats
    whole_ones = {name: runs for name, runs in configurations.items() if whole(runs)}
    if not whole_ones:
        return {}
    shared = statistics.mode(frozenset(runs) for runs in whole_ones.values())
    return {name: runs for name, runs in whole_ones.items() if frozenset(runs) == shared}


def held_out_probabilities(client, runs: dict[tuple, object], data, device, scratch: Path) -> dict[tuple, torch.Tensor]:
    """P(label 1) of each fold's held-out faces, by the fold's model, through the run's own view."""
    out = {}
    for key, run in runs.items():
        model, cfg = load_run_model(client, run.info.run_id, scratch / run.info.run_id)
        folds, repeat, fold, _ = key
        _, held = cfg.fold(data.train, folds, fold, repeat)
        out[key] = predict_proba(model.to(device), held.images, evaluation_view(cfg.augment()), cfg.augment(),
                                 device, cfg.precision)
    return out


def cv_accuracy(members: list, probs: dict, labels: dict) -> tuple[float, float]:
    """Mean and sd over the folds of the accuracy of the members' averaged probabilities."""
    accs = []
    for key, y in labels.items():
        p = torch.stack([probs[m][key] for m in members]).mean(0)
        accs.append(((p >= 0.5).long() == y).double().mean().item())
    return statistics.fmean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0


@cli_entry
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the folder the study was run on (train/ is read)")
    parser.add_argument("--tracking-uri", action="append", help="an MLflow store holding the study's runs; "
                        "repeat it for studies kept in several stores (default: $MLFLOW_TRACKING_URI, mlruns/)")
    parser.add_argument("--max-size", type=int, default=5, help="largest ensemble size listed (default 5)")
    parser.add_argument("--combinations", type=int, default=2000, help="at most this many ensembles of one size")
    parser.add_argument("--cache-dir", help="decode cache folder (default ~/.cache/agestudy)")
    args = parser.parse_args(argv)
    data = load_data(args.data, args.cache_dir, progress=False, verbose=False)
    found = {}
    for uri in args.tracking_uri or [None]:
        client, _ = open_store(uri)
        found.update({name: (client, runs) for name, runs in fold_runs(client).items()})
    configurations = complete({name: runs for name, (_, runs) in found.items()})
    if not configurations:
        raise UserError("no cross-validated trial with all its folds finished in these stores")
    device = devices.select_device("auto")
    probs, labels = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in tqdm(sorted(configurations), desc="configurations", unit="config"):
            probs[name] = held_out_probabilities(found[name][0], configurations[name], data, device, Path(scratch))
    for folds, repeat, fold, seed in next(iter(configurations.values())):  # the folds depend on the seed only
        labels[(folds, repeat, fold, seed)] = TrainConfig(seed=seed).fold(data.train, folds, fold, repeat)[1].labels

    names = sorted(configurations)
    print(f"{len(names)} configurations, {len(labels)} folds, {sum(len(y) for y in labels.values())} held-out faces")
    for name in names:
        mean, sd = cv_accuracy([name], probs, labels)
        print(f"  {name[0]} trial {name[1]}: {100 * mean:.2f} +- {100 * sd:.2f} %")
    rng = random.Random(0)
    for size in range(2, min(args.max_size, len(names) - 1) + 1):
        combos = list(itertools.combinations(names, size))
        if len(combos) > args.combinations:
            combos = rng.sample(combos, args.combinations)
        accs = [cv_accuracy(list(c), probs, labels)[0] for c in combos]
        print(f"ensembles of {size}: mean {100 * statistics.fmean(accs):.2f} %, lowest {100 * min(accs):.2f}, "
              f"highest {100 * max(accs):.2f} ({len(combos)} combinations)")
    mean, sd = cv_accuracy(names, probs, labels)
    print(f"all {len(names)}: {100 * mean:.2f} +- {100 * sd:.2f} %")
    wrong = torch.zeros(len(names) + 1, dtype=torch.long)
    for key, y in labels.items():
        counts = torch.stack([((probs[n][key] >= 0.5).long() != y) for n in names]).sum(0)
        wrong += torch.bincount(counts, minlength=len(names) + 1)
    shares = ", ".join(f"{k}: {int(c)}" for k, c in enumerate(wrong))
    print(f"held-out faces wrong by k of the configurations: {shares}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
