"""Q11: ageing and rejuvenating a face with CycleGAN: the CycleGAN run and the judgement it logged.

No analysis run here: ``python -m agestudy.cyclegan --judge RUN_ID`` trains the generators and
has this classifier judge them (agestudy/analyses/q11_cyclegan.py) in one run of its own
(tag ``agestudy.role=cyclegan``), which is this section's whole source. Which one: the latest
finished CycleGAN run judged by the report's run (in any experiment), else the latest of the
report's experiment on the same data, else its latest.
"""

from __future__ import annotations

from agestudy.runs import (
    CYCLEGAN_LOSS_PLOT,
    CYCLEGAN_PAIRS_PER_SECOND,
    CYCLEGAN_SAMPLES_DIR,
    DATA_FINGERPRINT_TAG,
    JUDGE_GRID,
    JUDGE_RUN_TAG,
    JUDGE_SCATTER,
    JUDGE_TABLE,
    ROLE_CYCLEGAN,
    SYNTHETIC_TAG,
    TRAIN_SECONDS,
    logged_number,
)

PARAMS = ("size", "epochs", "batch_size", "lambda_cycle", "lambda_identity", "precision", "device",
          "data.train_0", "data.train_1")


def build(ctx) -> dict:
    store, run = ctx.store, ctx.run
    out = {"run": None, "command": f"python -m agestudy.cyclegan --data {run.params.get('data.root', 'ROOT')} "
                                   f"--judge {run.id}"}
    fingerprint = run.params.get("data.fingerprint") or run.tags.get(DATA_FINGERPRINT_TAG, "")
    everywhere = [e.experiment_id for e in store.client.search_experiments()]
    candidates = ((everywhere, {JUDGE_RUN_TAG: run.id}), (run.experiment_id, {DATA_FINGERPRINT_TAG: fingerprint}),
                  (run.experiment_id, None))
    chosen = next((found[0] for where, extra in candidates
                   if (found := store.find(where, role=ROLE_CYCLEGAN, status="FINISHED", extra=extra))), None)
    if chosen is None:
        return out
    samples = [path for path in store.listing(chosen.id, CYCLEGAN_SAMPLES_DIR) if path.endswith(".png")]
    out.update(
        run=chosen, judge=store.json(chosen.id, JUDGE_TABLE), judge_table=JUDGE_TABLE,
        judge_run_id=chosen.tags.get(JUDGE_RUN_TAG), judged_by_this_run=chosen.tags.get(JUDGE_RUN_TAG) == run.id,
        same_data=chosen.tags.get(DATA_FINGERPRINT_TAG) == fingerprint,
        synthetic=chosen.tags.get(SYNTHETIC_TAG) == "true",
        params={k: chosen.params.get(k) for k in PARAMS},
        seconds=logged_number(chosen.metrics.get(TRAIN_SECONDS)),
        pairs_per_second=logged_number(chosen.metrics.get(CYCLEGAN_PAIRS_PER_SECOND)),
        grid=store.figure(chosen.id, JUDGE_GRID),
        scatter=store.figure(chosen.id, JUDGE_SCATTER),
        losses=store.figure(chosen.id, CYCLEGAN_LOSS_PLOT),
        first_samples=store.figure(chosen.id, samples[0]) if len(samples) > 1 else None,
        last_samples=store.figure(chosen.id, samples[-1]) if samples else None,
    )
    return out
