"""Question 11's CycleGAN: networks, losses, the judge, the tracked run and the CLI, on tiny data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from torch import nn

from agestudy import runs
from agestudy.analyses import q11_cyclegan as judging
from agestudy.cyclegan import (
    CycleGANConfig,
    ImagePool,
    augment,
    build_networks,
    generator_losses,
    load_generators,
    run_cyclegan,
)
from agestudy.errors import UserError
from agestudy.models.cyclegan import Generator, PatchDiscriminator, to_gan_input, to_uint8_frame

TINY = {"size": 32, "width": 4, "blocks": 1, "disc_width": 4, "batch_size": 4, "samples": 2, "grids": 1}


class Negate(nn.Module):
    def forward(self, x):
        return -x


def test_generator_keeps_the_shape_and_range_and_the_discriminator_scores_patches():
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    out = Generator(width=4, blocks=1)(x)
    assert out.shape == x.shape and out.abs().max() <= 1
    scores = PatchDiscriminator(width=4, layers=2)(x)
    assert scores.shape == (2, 1, 14, 14)  # one score per 34x34 patch
    with pytest.raises(ValueError, match="divisible by 4"):
        Generator(width=4, blocks=1)(torch.zeros(1, 3, 30, 30))


def test_cycle_and_identity_losses():
    x, y = torch.rand(3, 3, 8, 8) * 2 - 1, torch.rand(3, 3, 8, 8) * 2 - 1
    D = nn.Conv2d(3, 1, 1)
    same, _, _ = generator_losses(nn.Identity(), nn.Identity(), D, D, x, y)
    assert same["cycle"].item() == 0 and same["identity"].item() == 0
    # negation undone by negation: a perfect cycle, but it changes faces already in the target group
    neg, fake_x, fake_y = generator_losses(Negate(), Negate(), D, D, x, y)
    assert neg["cycle"].item() == 0
    assert neg["identity"].item() == pytest.approx(2 * y.abs().mean().item() + 2 * x.abs().mean().item(), rel=1e-5)
    assert torch.equal(fake_y, -x) and torch.equal(fake_x, -y)
    off, _, _ = generator_losses(Negate(), Negate(), D, D, x, y, with_identity=False)
    assert off["identity"].item() == 0


def test_image_pool_mixes_history_into_full_batches():
    pool = ImagePool(4, torch.Generator().manual_seed(0))
    first = torch.zeros(4, 1, 2, 2)
    assert torch.equal(pool.query(first), first)  # filling: the batch itself
    mixed = [pool.query(torch.full((4, 1, 2, 2), float(i))) for i in range(1, 20)]
    assert len(pool.images) == 4
    # some outputs came from the history (an older value than the batch's own)
    assert any((m[:, 0, 0, 0] < i + 1).any() for i, m in enumerate(mixed))
    assert torch.equal(ImagePool(0, torch.Generator()).query(first + 7), first + 7)  # no pool: the batch itself


def test_images_round_trip_and_augmentation_is_seeded():
    images = torch.randint(0, 256, (5, 3, 100, 100), dtype=torch.uint8)
    assert torch.equal(to_uint8_frame(to_gan_input(images, 100)), images)
    small = to_gan_input(images, 64)
    assert small.shape == (5, 3, 64, 64) and small.min() >= -1 and small.max() <= 1
    a = augment(small, torch.Generator().manual_seed(1))
    b = augment(small, torch.Generator().manual_seed(1))
    assert a.shape == small.shape and torch.equal(a, b) and not torch.equal(a, small)


def test_config_checks_and_auto_values():
    with pytest.raises(UserError, match="--size"):
        CycleGANConfig(size=30).validate()
    with pytest.raises(UserError, match="--precision"):
        CycleGANConfig(precision="fp16").validate()
    cfg = CycleGANConfig(train_images=1000).resolved(torch.device("cpu"), n_per_epoch=300)
    assert cfg.batch_size == 8 and cfg.epochs == 3 and cfg.device == "cpu" and cfg.precision in ("fp32", "bf16")


def test_identity_generators_change_nothing_for_the_judge(synthetic_root):
    """With G = F = identity nothing rises, nothing flips, the cycle is exact, and the translated
    faces are exactly as far from the target group as the real ones."""
    from agestudy.data import load_data
    from agestudy.models import create_model

    data = load_data(synthetic_root, progress=False, verbose=False)
    test = data.test.subset(list(range(0, len(data.test), 6)))  # a handful of faces of each group
    model = create_model("efficient", width=8, members=2).eval()
    summary, _ = judging.judge(model, 88, nn.Identity(), nn.Identity(), test, 32, torch.device("cpu"))
    for group in ("young", "old"):
        s = summary[group]
        assert s["n"] == int((test.labels == (0 if group == "young" else 1)).sum())
        assert s["rise_count"] == 0 and s["flip_count"] == 0 and s["delta_mean"] == 0
        assert s["cycle_l1"] == 0
        # the reference is computed young-to-old, the old group's distance old-to-young: round-off only
        assert s["fd_to_target"]["value"] == pytest.approx(s["fd_real_to_target"]["value"], rel=1e-6)
        assert s["changes"]["mean_abs_change"] == 0 and s["changes"]["edge_correlation"] == pytest.approx(1)
    # and a generator that inverts the faces is seen as changing them
    summary, _ = judging.judge(model, 88, Negate(), Negate(), test, 32, torch.device("cpu"))
    assert summary["young"]["changes"]["mean_abs_change"] > 0.05


def test_frechet_distance_matches_the_definition():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(150, 6)) * 1.5 + 0.3
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    mu = a.mean(0) - b.mean(0)
    expected = mu @ mu + np.trace(sa + sb - 2 * sqrtm(sa @ sb).real)
    assert judging.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert judging.frechet_distance(a, a) == pytest.approx(0, abs=1e-8)


def test_one_epoch_run_is_tracked_and_judged(synthetic_root, tracking, tmp_path):
    """Train a classifier, then one CycleGAN epoch judged by it: curves, grids, weights, judge table."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from agestudy.config import TrainConfig
    from agestudy.data import load_data
    from agestudy.train import train_and_log

    data = load_data(synthetic_root, progress=False, verbose=False)
    judge = train_and_log(TrainConfig(model="baseline", epochs=1, batch_size=32, members=1), data, progress=False,
                          tags={"agestudy.role": "train"})
    experiment_id = mlflow.get_experiment_by_name("test").experiment_id
    out = run_cyclegan(CycleGANConfig(**TINY, epochs=1), data, experiment_id, progress=False)
    assert out["judge_run_id"] == judge.run_id  # found by itself: the latest train run on the same data
    client = MlflowClient()
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["agestudy.role"] == "cyclegan"
    assert run.data.tags["agestudy.judge_run"] == judge.run_id
    assert run.data.params["epochs"] == "1" and run.data.params["size"] == "32"
    assert len(client.get_metric_history(run.info.run_id, runs.cyclegan_metric("cycle"))) >= 1
    for key in (runs.TRAIN_SECONDS, runs.TRAIN_ITERATIONS, runs.CYCLEGAN_PAIRS_PER_SECOND,
                runs.judge_metric("old_cycle_l1")):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [runs.SUMMARY_STEP], key
    artifacts = {a.path for folder in ("samples", "judge", "model", "plots")
                 for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"samples/epoch_001.png", "judge/judge.json", "judge/grid.png", "judge/probabilities.png",
            "model/generators.pt", "plots/losses.png"} <= artifacts
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "judge/judge.json", str(tmp_path))).read_text())
    n_young = int((data.test.labels == 0).sum())
    assert table["young"]["n"] == n_young and table["judge_run"] == judge.run_id
    assert table["young"]["rise_fraction"] == pytest.approx(table["young"]["rise_count"] / n_young)
    assert 0 <= table["young"]["rise_ci_low"] <= table["young"]["rise_fraction"] <= table["young"]["rise_ci_high"] <= 1
    assert run.data.metrics[runs.judge_metric("old_cycle_l1")] == pytest.approx(table["old"]["cycle_l1"])
    # the generators load back with weights_only=True and translate a face
    path = client.download_artifacts(run.info.run_id, "model/generators.pt", str(tmp_path))
    G, _, cfg = load_generators(path)
    assert cfg.size == 32 and cfg.epochs == 1
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    reference = build_networks(cfg, torch.device("cpu"))[0]
    assert G(x).shape == x.shape and not torch.equal(G(x), reference.eval()(x))  # trained, not re-initialised


def _cli(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "AGESTUDY_THREADS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    return subprocess.run([sys.executable, "-m", "agestudy.cyclegan", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_mistakes_are_one_line_errors(synthetic_root, tmp_path):
    bad_size = _cli(["--data", str(synthetic_root), "--size", "30"], tmp_path)
    assert bad_size.returncode == 2 and "Traceback" not in bad_size.stderr and "--size" in bad_size.stderr
    unknown = _cli(["--data", str(synthetic_root), "--judge", "0123456789abcdef", "--quiet"], tmp_path)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr and "0123456789abcdef" in unknown.stderr
    missing = _cli(["--data", str(tmp_path / "nowhere")], tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    shown = _cli(["--help"], tmp_path)
    assert shown.returncode == 0 and "--judge" in shown.stdout and "CPU" in shown.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_one_epoch_on_the_gpu_in_its_precision():
    """The GPU path: batched on the device, in the precision the hardware gives (bf16 or fp32)."""
    from agestudy.cyclegan import train_cyclegan

    device = torch.device("cuda")
    cfg = CycleGANConfig(**TINY, epochs=1).resolved(device, n_per_epoch=16)
    young, old = (torch.rand(16, 3, 32, 32, device=device) * 2 - 1 for _ in range(2))
    result = train_cyclegan(cfg, young, old, device, progress=False)
    assert result.iterations == 16 // cfg.batch_size
    assert all(np.isfinite(v) for points in result.history.values() for _, v in points)
    assert next(result.G.parameters()).device.type == "cuda"
