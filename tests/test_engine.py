"""The training engine: the batched ensemble, per-member batches, precision, fp16 scaling, compile
fallback. GPU-only paths run where CUDA exists and skip cleanly elsewhere."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agestudy import device as devices
from agestudy.config import TrainConfig
from agestudy.data import load_data
from agestudy.engine import fit, next_batch, paste_box, setup_training, train_step
from agestudy.errors import UserError
from agestudy.models import create_model, pack_members, split_members
from agestudy.models.members import mean_probability_logits
from agestudy.runs import TEACHER_PREFIX, TRAIN_LOSS, VAL_ACC

TINY = dict(model="efficient", width=8, stem_stride=4, epochs=1, batch_size=16, crop=64, padding=2, precision="fp32")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "member-by-member"])
@pytest.mark.parametrize("name,knobs", [("efficient", {"width": 8, "stem_stride": 2}),
                                        ("baseline", {"crop": 32, "hidden": 16})])
def test_batched_ensemble_equals_its_members_run_separately(name, knobs, grouped):
    torch.manual_seed(0)
    separate = [create_model(name, dropout=0.0, **knobs).train() for _ in range(3)]
    packed = pack_members(copy.deepcopy(separate)).train()
    x = torch.randn(3 * 8, 3, 32, 32)  # member m's own batch: rows [8m, 8m+8)
    y = torch.randint(0, 2, (3, 8))

    logits = packed.member_logits(x, grouped=grouped)  # 8 x 3 x 2
    F.cross_entropy(logits.reshape(-1, 2), y.T.reshape(-1), reduction="sum").backward()
    for k, net in enumerate(separate):
        own = net(x[8 * k : 8 * (k + 1)])
        F.cross_entropy(own, y[k], reduction="sum").backward()
        torch.testing.assert_close(logits[:, k], own, rtol=1e-4, atol=1e-5)
    # gradients: the packed network's, taken apart, are each member's own
    grads = {n: p.grad for n, p in packed.named_parameters()}
    for k, net in enumerate(separate):
        for n, p in net.named_parameters():
            torch.testing.assert_close(grads[n].chunk(3)[k], p.grad, rtol=1e-4, atol=1e-5)
    # BatchNorm statistics stay per member too
    for k, net in enumerate(split_members(packed)):
        torch.testing.assert_close(net.state_dict()["stem.0.1.running_mean"] if name == "efficient" else
                                   net.state_dict()["features.0.weight"],
                                   separate[k].state_dict()["stem.0.1.running_mean"] if name == "efficient" else
                                   separate[k].state_dict()["features.0.weight"])


def test_ensemble_forward_is_the_mean_member_probability():
    torch.manual_seed(0)
    model = create_model("efficient", members=3, width=8).eval()
    x = torch.randn(4, 3, 48, 48)
    mean = torch.stack([m(x).softmax(1) for m in split_members(model)]).mean(0)
    torch.testing.assert_close(model(x).softmax(1), mean, rtol=1e-5, atol=1e-6)
    # the grouped path (what a GPU runs) gives the same ensemble
    grouped = mean_probability_logits(model.grouped_logits(x.repeat(1, 3, 1, 1)))
    torch.testing.assert_close(grouped.softmax(1), mean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_the_stem_shrinks_the_image_by_its_stride(stride):
    model = create_model("efficient", width=8, stem_stride=stride, members=2).eval()
    x = torch.randn(2, 3, 88, 88)
    assert model.stem(x.repeat(1, 2, 1, 1)).shape == (2, 16, 88 // stride, 88 // stride)
    assert model(x).shape == (2, 2)  # global pooling: the same head for every stride
    with pytest.raises(UserError, match="stem stride"):
        TrainConfig(stem_stride=3)


def test_members_see_their_own_shuffle_once_per_epoch(synthetic_root, tmp_path):
    data = load_data(synthetic_root, tmp_path / "cache", verbose=False)
    cfg = TrainConfig(**{**TINY, "members": 2})
    t = setup_training(cfg, data.train)
    seen = [next_batch(t, step) for step in range(t.steps_per_epoch)]
    orders = t.orders
    assert not torch.equal(orders[0], orders[1])
    for k in (0, 1):  # a permutation each: every image at most once per epoch
        used = orders[k, : t.steps_per_epoch * t.batch_size]
        assert len(used.unique()) == len(used)
    x, y = seen[0]
    assert x.shape == (2 * 16, 3, 64, 64) and y.shape == (16, 2)
    torch.testing.assert_close(y, t.labels[orders[:, :16]].T)
    # a new epoch reshuffles
    next_batch(t, t.steps_per_epoch)
    assert not torch.equal(t.orders, orders)


def step_and_replay(t, x, y):
    """One ``train_step`` on (x, y): its loss, the inputs the model actually saw (mixed) and their
    logits under the weights from before the step (train mode: the same batch statistics)."""
    seen = {}
    forward = t.member_logits
    t.member_logits = lambda inputs: (seen.setdefault("x", inputs.clone()), forward(inputs))[1]
    state = copy.deepcopy(t.model.state_dict())
    loss = train_step(t, x, y)[0]
    t.model.load_state_dict(state)
    with torch.no_grad():
        logits = forward(seen["x"]).float()  # B x M x 2
    return loss, seen["x"], logits


@pytest.mark.parametrize("mixing", [{"mixup": 0.4}, {"mixup": 0.0, "cutmix": 1.0}], ids=["mixup", "cutmix"])
def test_mixing_uses_each_members_own_images_and_labels(synthetic_root, tmp_path, mixing):
    """An ensemble's member k blends (mixup) or pastes (cutmix) its batch with images of its own
    batch, and learns their labels."""
    data = load_data(synthetic_root, tmp_path / "cache", verbose=False)
    t = setup_training(TrainConfig(**{**TINY, "members": 3, **mixing, "dropout": 0.0, "ema": 0.0}),
                       data.train)
    x, y = next_batch(t, 0)
    b = y.shape[0]

    class AllPartner:  # lam = 0: each image replaced by its partner, each label by the partner's
        def beta(self, a, c):
            return 0.0

        def integers(self, n):  # cutmix's box centred: with lam = 0 it covers the whole image
            return n // 2

        def random(self):
            return 0.0

    t.mixup_rng = AllPartner()
    loss, blended, logits = step_and_replay(t, x, y)  # recompute the loss it took
    expected = 0.0
    for k in range(3):
        mine = x[k * b : (k + 1) * b].flatten(1)
        for i in range(b):
            image = blended[k * b + i].flatten()
            match = (mine == image).all(1).nonzero().flatten()
            assert len(match) >= 1  # one of member k's own images, not another member's
            target = y[match[0], k]
            expected += float(F.cross_entropy(logits[i, k][None], target[None], label_smoothing=t.cfg.label_smoothing))
    assert abs(float(loss) - expected / b / 3) < 1e-4  # trained on the partners' labels


def test_cutmix_box_comes_from_the_partner_and_sets_the_label_share():
    rng = np.random.default_rng(0)
    images = torch.cat([torch.zeros(4, 3, 24, 20), torch.ones(4, 3, 24, 20)])  # images 0-3 black, 4-7 white
    partner_rows = torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])  # each black image's partner is white, and back
    before = images.clone()
    for lam in [0.0, 0.2, 0.5, 0.8, 1.0]:
        mixed, kept = paste_box(images, partner_rows, lam, rng)
        pasted = mixed[0, 0] == 1
        # the same box in every image and channel, holding its partner's pixels
        assert torch.equal(mixed[:4], pasted.expand_as(mixed[:4]).float())
        assert torch.equal(mixed[4:], (~pasted).expand_as(mixed[4:]).float())
        rows, cols = pasted.any(1).nonzero().flatten(), pasted.any(0).nonzero().flatten()
        if len(rows):  # the pasted pixels form one rectangle
            assert pasted[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        assert kept == pytest.approx(1 - pasted.float().mean().item())  # labels in proportion to the areas
    assert torch.equal(images, before)  # the inputs are left alone


def test_distillation_learns_the_teachers_probabilities_for_the_same_inputs(synthetic_root, tmp_path):
    """With a teacher, member k's target for each (mixed, augmented) image of its own batch is the
    teacher's probability for that very image, and the labels play no part."""
    data = load_data(synthetic_root, tmp_path / "cache", verbose=False)

    class Teacher(torch.nn.Module):  # sure of itself and different for every image: any mismatch shows
        def forward(self, images):
            brightness = images.float().mean((1, 2, 3))
            return torch.stack([brightness, -brightness], 1) * 20

    teacher = Teacher()
    cfg = TrainConfig(**{**TINY, "members": 3, "mixup": 0.4, "dropout": 0.0})
    t = setup_training(cfg, data.train, teacher=teacher)
    x, y = next_batch(t, 0)
    b = y.shape[0]
    loss, mixed, logits = step_and_replay(t, x, y)  # recompute the loss it took
    assert not torch.equal(mixed, x)  # mixup still blends the student's inputs
    with torch.no_grad():
        expected = sum(-(teacher(mixed[k * b : (k + 1) * b]).softmax(-1) * logits[:, k].log_softmax(-1)).sum(-1).mean()
                       for k in range(3)) / 3
    assert float(loss) == pytest.approx(float(expected), abs=1e-4)

    def weights_after_one_step(labels, with_teacher=True):
        run = setup_training(cfg, data.train, teacher=teacher if with_teacher else None)
        images, _ = next_batch(run, 0)
        train_step(run, images, labels)
        return torch.cat([p.detach().flatten() for p in run.model.parameters()])

    flipped = 1 - y
    torch.testing.assert_close(weights_after_one_step(y), weights_after_one_step(flipped), rtol=0, atol=0)
    # without a teacher the same flip changes the step: the comparison above can tell
    assert not torch.equal(weights_after_one_step(y, False), weights_after_one_step(flipped, False))


def test_distill_trains_the_teacher_first_and_logs_its_curves(synthetic_root, tmp_path):
    data = load_data(synthetic_root, tmp_path / "cache", verbose=False)
    cfg = TrainConfig(**{**TINY, "members": 1, "distill": 2, "val_fraction": 0.2, "evals_per_epoch": 1})
    train, val = cfg.split(data.train)
    logged = {}
    result = fit(cfg, train, val, lambda metrics, step: logged.update(metrics), progress=False)
    assert result.model.members == 1  # the student is what the run keeps
    for key in (TRAIN_LOSS, VAL_ACC):
        assert TEACHER_PREFIX + key in logged and TEACHER_PREFIX + key in result.history
        assert key in logged and key in result.history
    with pytest.raises(UserError, match="cannot be an ensemble"):
        TrainConfig(model="resnet18", members=1, distill=3)
    with pytest.raises(UserError, match="distill"):
        TrainConfig(distill=-1)


def test_sam_steps_with_the_gradient_at_each_members_worst_nearby_weights(synthetic_root, tmp_path):
    """With --sam rho, the update follows the gradient at w + rho * g_k / ||g_k||, where g_k is member
    k's own gradient and ||g_k|| its own norm, not the gradient at w; BatchNorm's running statistics
    move once, as without SAM."""
    data = load_data(synthetic_root, tmp_path / "cache", verbose=False)
    rho = 0.5
    cfg = TrainConfig(**{**TINY, "members": 2, "mixup": 0.0, "dropout": 0.0, "sam": rho})
    t = setup_training(cfg, data.train)
    x, y = next_batch(t, 0)
    # in float64: in float32 the gradient of this small network moves by ~1 % for weight changes of
    # ~1e-8, the rounding by which two orders of the same additions differ
    t.model.double()
    x = x.double()
    reference = copy.deepcopy(t.model)

    def gradient():
        reference.zero_grad()
        logits = reference.member_logits(x).float().reshape(-1, 2)
        (F.cross_entropy(logits, y.reshape(-1)) * 2).backward()
        return [p.grad.clone() for p in reference.parameters()]

    at_w = gradient()
    own_norms = torch.stack([torch.stack([g.chunk(2)[k].norm() for g in at_w]).norm() for k in range(2)])
    with torch.no_grad():
        for p, g in zip(reference.parameters(), at_w):
            for k in range(2):
                p.chunk(2)[k].add_(rho * g.chunk(2)[k] / own_norms[k])
    at_worst = gradient()
    with torch.no_grad():  # the same with one norm for the whole ensemble: what per-member norms are not
        common = torch.stack([g.norm() for g in at_w]).norm()
        for p, g in zip(reference.parameters(), at_w):
            for k in range(2):
                p.chunk(2)[k].add_(rho * g.chunk(2)[k] * (1 / common - 1 / own_norms[k]))
    at_common = gradient()

    train_step(t, x, y)
    used = torch.cat([p.grad.flatten() for p in t.model.parameters()])  # what the optimiser stepped with

    def distance(grads):
        return float((used - torch.cat([g.flatten() for g in grads])).norm() / used.norm())

    assert distance(at_worst) < 1e-5
    assert distance(at_w) > 0.1 and distance(at_common) > 0.1  # the check tells the alternatives apart
    # BatchNorm: the perturbed pass leaves the running statistics as the first pass set them
    plain = setup_training(TrainConfig(**{**cfg.__dict__, "sam": 0.0}), data.train)
    images, labels = next_batch(plain, 0)
    plain.model.double()
    train_step(plain, images.double(), labels)
    torch.testing.assert_close(t.model.state_dict()["stem.0.1.running_mean"],
                               plain.model.state_dict()["stem.0.1.running_mean"], rtol=0, atol=0)
    with pytest.raises(UserError, match="sam"):
        TrainConfig(sam=-0.1)


def test_training_step_changes_weights_without_reading_the_device(synthetic_root, tmp_path, monkeypatch):
    data = load_data(synthetic_root, tmp_path / "cache", verbose=False)
    t = setup_training(TrainConfig(**{**TINY, "members": 2}), data.train)
    before = [p.detach().clone() for p in t.model.parameters()]

    def no_sync(*args, **kwargs):
        raise AssertionError("the training step read a value back from the device")

    monkeypatch.setattr(torch.Tensor, "item", no_sync)
    monkeypatch.setattr(torch.Tensor, "__float__", no_sync)
    stats = train_step(t, *next_batch(t, 0))
    monkeypatch.undo()
    assert stats.shape == (2,) and stats.device == t.device
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters()))


def test_precision_comes_from_the_hardware_never_from_a_timing(monkeypatch, tmp_path):
    import time

    def no_clock():
        raise AssertionError("precision was chosen by timing")

    monkeypatch.setattr(time, "perf_counter", no_clock)
    monkeypatch.setattr(time, "time", no_clock)
    expected = "bf16" if devices.cpu_has_native_bf16() else "fp32"
    assert {devices.choose_precision(torch.device("cpu")) for _ in range(3)} == {expected}
    assert devices.choose_precision(torch.device("cpu"), "fp16") == "fp16"
    flags = tmp_path / "cpuinfo"
    flags.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert not devices.cpu_has_native_bf16(flags)
    flags.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert devices.cpu_has_native_bf16(flags)
    flags.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")  # ARM
    assert devices.cpu_has_native_bf16(flags)


def test_fp16_scales_unscales_before_clipping_and_skips_inf_steps(synthetic_root, tmp_path, monkeypatch):
    data = load_data(synthetic_root, tmp_path / "cache", verbose=False)
    t = setup_training(TrainConfig(**{**TINY, "precision": "fp16", "grad_clip": 1.0}), data.train)
    assert t.scaler.is_enabled() and t.scaler.get_scale() > 1
    clipped = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        params = list(params)
        clipped.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item())
        return clip(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    train_step(t, *next_batch(t, 0))
    # the loss was scaled by 65536 for backward, but clipping saw the true gradients
    assert clipped and clipped[0] < 1000 < t.scaler.get_scale()

    # an inf gradient: the step is skipped (weights unchanged) and the scale backs off
    scale = t.scaler.get_scale()
    before = [p.detach().clone() for p in t.model.parameters()]
    first = next(t.model.parameters())
    handle = first.register_hook(lambda g: torch.full_like(g, float("inf")))
    train_step(t, *next_batch(t, 1))
    handle.remove()
    assert all(torch.equal(a, b) for a, b in zip(before, t.model.parameters()))
    assert t.scaler.get_scale() < scale


def test_compile_falls_back_cleanly(monkeypatch):
    def broken_compile(fn, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    fn = lambda x: x + 1  # noqa: E731
    with pytest.warns(UserWarning, match="running eagerly"):
        assert devices.compiled(fn) is fn

    def compiles_but_fails(fn, **kwargs):
        def call(*args):
            raise RuntimeError("backend failed")
        return call

    monkeypatch.setattr(torch, "compile", compiles_but_fails)
    wrapped = devices.compiled(fn)
    with pytest.warns(UserWarning, match="running eagerly"):
        assert wrapped(torch.tensor(1)) == 2
    assert wrapped(torch.tensor(2)) == 3  # stays eager, no second warning needed


def test_training_length_scales_with_the_data():
    cfg = TrainConfig()
    assert cfg.epochs_for(2_327, "cpu") == 60  # the development faces: about 60 epochs
    assert 3 <= cfg.epochs_for(40_000, "cpu") <= 4  # CACD: the same number of images seen
    assert TrainConfig(epochs=7).epochs_for(40_000, "cpu") == 7
    # a GPU takes a CPU's optimiser steps with its 4x larger batch: 4x the images; an explicit length holds everywhere
    assert cfg.train_images_for("cuda") * cfg.batch_for("cpu") == cfg.train_images_for("cpu") * cfg.batch_for("cuda")
    assert cfg.epochs_for(2_327, "cuda") == 241
    assert TrainConfig(train_images=55_000).epochs_for(2_327, "cuda") == 24
    resolved = cfg.resolved(torch.device("cpu"), 2_327)
    assert resolved.train_images == 140_000 and resolved.epochs == 60  # what the run logs: concrete values
    assert cfg.batch_for("cpu") == 64 and cfg.batch_for("cuda") == 256
    assert cfg.lr_for(256) == pytest.approx(2 * cfg.lr_for(64))  # auto batch: lr scaled by sqrt(batch / 64)
    assert TrainConfig(batch_size=32, lr=1e-3).lr_for(32) == 1e-3  # an explicit batch keeps --lr as given


@cuda
def test_cuda_training_keeps_data_and_step_on_the_gpu(synthetic_root, tmp_path):
    data = load_data(synthetic_root, tmp_path / "cache", verbose=False)
    t = setup_training(TrainConfig(**{**TINY, "members": 2, "precision": "auto", "device": "cuda"}), data.train)
    assert t.images.is_cuda and t.generator.device.type == "cuda"
    assert t.precision == ("bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16")
    x, y = next_batch(t, 0)
    assert x.is_cuda and y.is_cuda
    assert train_step(t, x, y).is_cuda


def test_one_split_for_training_and_analyses():
    """TrainConfig.split is the one place a run's validation split comes from: stratified,
    seeded, and nothing held out when val_fraction is 0."""
    from agestudy.config import TrainConfig
    from agestudy.data import ImageSet

    labels = torch.tensor([0] * 30 + [1] * 20)
    images = ImageSet(torch.zeros(50, 3, 4, 4, dtype=torch.uint8), labels, [f"{i}.jpg" for i in range(50)])
    fit_set, val = TrainConfig(val_fraction=0.2, seed=3).split(images)
    assert len(val) == 10 and val.class_counts() == {0: 6, 1: 4}
    assert not set(val.files) & set(fit_set.files) and len(fit_set) + len(val) == 50
    again, _ = TrainConfig(val_fraction=0.2, seed=3).split(images)
    assert again.files == fit_set.files
    everything, none = TrainConfig(val_fraction=0.0).split(images)
    assert none is None and everything is images
