"""The data layer: layout errors, skipped and converted files, the decode cache, splits, augmentation."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import REPO, write_image
from PIL import Image

from agestudy.data import AugmentConfig, augment_batch, load_data, stratified_split
from agestudy.data import cache as cache_module
from agestudy.data.augment import center_crop, random_crop, save_augmentation_grid
from agestudy.errors import UserError
from agestudy.train import main as train_main

# ----------------------------------------------------------------------------- bad layouts

def test_missing_root(tmp_path, cache_dir):
    with pytest.raises(UserError, match="data folder not found"):
        load_data(tmp_path / "nope", cache_dir)


def test_missing_split(lab_tree, cache_dir):
    import shutil

    shutil.rmtree(lab_tree / "test")
    with pytest.raises(UserError, match="missing split folder .*test"):
        load_data(lab_tree, cache_dir)


def test_missing_label_folder(lab_tree, cache_dir):
    import shutil

    shutil.rmtree(lab_tree / "train" / "1")
    with pytest.raises(UserError, match=r"missing label folder .*train/1"):
        load_data(lab_tree, cache_dir)


def test_class_without_images(lab_tree, cache_dir):
    for f in (lab_tree / "test" / "0").iterdir():
        f.unlink()
    (lab_tree / "test" / "0" / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match=r"no images in .*test/0"):
        load_data(lab_tree, cache_dir)


def test_class_whose_images_are_all_unreadable(lab_tree, cache_dir):
    for f in (lab_tree / "test" / "1").iterdir():
        f.write_bytes(b"garbage")
    with pytest.raises(UserError, match="class has no images"):
        load_data(lab_tree, cache_dir)


def test_unknown_folders_are_listed_and_ignored(lab_tree, cache_dir, capsys):
    (lab_tree / "valid").mkdir()
    (lab_tree / "train" / "2").mkdir()
    write_image(lab_tree / "train" / "2" / "x.png", 99)
    data = load_data(lab_tree, cache_dir)
    assert set(data.ignored) == {"valid/", "train/2"}
    assert len(data.train) == 8  # the image in train/2 is not used
    err = capsys.readouterr().err
    assert "ignored 2 unknown entries" in err and "valid/" in err


def test_cli_reports_bad_root_in_one_line_with_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "agestudy.train", "--data", str(tmp_path / "missing")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: data folder not found: {tmp_path / 'missing'}"]


def test_cli_bad_option_value_exit_2(capsys):
    assert train_main(["--epochs", "-1", "--data", "whatever"]) == 2
    assert "epochs must be >= 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- skipped and converted files

def test_unreadable_files_are_skipped_and_counted(lab_tree, cache_dir, capsys):
    good = lab_tree / "train" / "0" / "img_000.png"
    (lab_tree / "train" / "0" / "empty.jpg").write_bytes(b"")
    (lab_tree / "train" / "1" / "text.png").write_text("this is not a png")
    truncated = lab_tree / "train" / "1" / "truncated.jpg"
    write_image(truncated, 5, fmt="JPEG")
    truncated.write_bytes(truncated.read_bytes()[:300])
    data = load_data(lab_tree, cache_dir)
    report = data.reports["train"]
    assert report.n_skipped == 3
    assert len(data.train) == 8
    assert not any("empty.jpg" in f or "truncated" in f for f in data.train.files)
    assert "3 unreadable file(s) skipped" in capsys.readouterr().err
    assert good.exists()


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P"])
def test_other_modes_are_converted_to_rgb(lab_tree, cache_dir, mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    write_image(lab_tree / "train" / "0" / f"odd.{fmt.lower()}", 7, mode=mode, fmt=fmt)
    data = load_data(lab_tree, cache_dir, verbose=False)
    assert data.reports["train"].n_converted == 1
    assert data.train.images.shape == (9, 3, 100, 100) and data.train.images.dtype == torch.uint8


def test_other_sizes_are_resized(lab_tree, cache_dir):
    write_image(lab_tree / "train" / "1" / "big.JPG", 8, size=(250, 180), fmt="JPEG")
    write_image(lab_tree / "train" / "1" / "small.webp", 9, size=(40, 40), fmt="WEBP")
    write_image(lab_tree / "train" / "1" / "bitmap.BMP", 10, fmt="BMP")  # 100x100 RGB: not converted
    data = load_data(lab_tree, cache_dir, verbose=False)
    assert data.reports["train"].n_converted == 2
    assert len(data.train) == 11


def test_exif_rotation_is_applied(lab_tree, cache_dir):
    arr = np.zeros((100, 100, 3), dtype=np.uint8)
    arr[:10, :, 0] = 255  # a red band at the top
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = lab_tree / "train" / "0" / "rotated.jpg"
    im.save(path, exif=exif, quality=95)
    data = load_data(lab_tree, cache_dir, verbose=False)
    i = data.train.files.index("train/0/rotated.jpg")
    img = data.train.images[i].numpy()
    assert data.reports["train"].n_converted == 1
    # upright, the red band is on the right edge instead of the top
    assert img[0, :, -5:].mean() > 200 and img[0, :5, 40:60].mean() < 60


# ----------------------------------------------------------------------------- decode cache

def test_second_load_comes_from_cache_without_decoding(lab_tree, cache_dir, monkeypatch):
    first = load_data(lab_tree, cache_dir, verbose=False)
    assert not first.reports["train"].from_cache

    def no_decoding(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(cache_module, "decode_image", no_decoding)
    second = load_data(lab_tree, cache_dir, verbose=False)
    assert second.reports["train"].from_cache and second.reports["test"].from_cache
    assert torch.equal(first.train.images, second.train.images)
    assert first.fingerprint == second.fingerprint
    assert first.train.files == second.train.files


def test_changed_file_changes_the_fingerprint(lab_tree, cache_dir):
    first = load_data(lab_tree, cache_dir, verbose=False)
    target = lab_tree / "train" / "1" / "img_000.png"
    write_image(target, 1234)
    os.utime(target, ns=(1, 1))
    second = load_data(lab_tree, cache_dir, verbose=False)
    assert second.reports["train"].fingerprint != first.reports["train"].fingerprint
    assert not second.reports["train"].from_cache
    assert second.reports["test"].fingerprint == first.reports["test"].fingerprint


# ----------------------------------------------------------------------------- validation split

def test_stratified_split_is_deterministic_and_stratified():
    labels = np.array([0] * 100 + [1] * 50)
    train_a, val_a = stratified_split(labels, 0.1, seed=3)
    train_b, val_b = stratified_split(labels, 0.1, seed=3)
    _, val_c = stratified_split(labels, 0.1, seed=4)
    assert np.array_equal(val_a, val_b) and np.array_equal(train_a, train_b)
    assert not np.array_equal(val_a, val_c)
    assert np.bincount(labels[val_a]).tolist() == [10, 5]
    assert len(set(train_a) & set(val_a)) == 0 and len(train_a) + len(val_a) == 150


# ----------------------------------------------------------------------------- augmentation

def test_augmentation_is_random_per_sample():
    torch.manual_seed(0)
    one = torch.randint(0, 256, (1, 3, 100, 100), dtype=torch.uint8)
    batch = one.expand(16, -1, -1, -1).contiguous()
    out = augment_batch(batch, AugmentConfig(crop=80, padding=4, flip=True, jitter=0.2),
                        torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 80, 80) and out.dtype == torch.float32
    distinct = {tuple(v.flatten()[:50].tolist()) for v in out}
    assert len(distinct) >= 12  # identical inputs, (almost) all different views


def test_random_crop_takes_real_windows():
    images = torch.arange(2 * 3 * 10 * 10, dtype=torch.int64).reshape(2, 3, 10, 10)
    crops = random_crop(images, 4, generator=torch.Generator().manual_seed(1))
    for b in range(2):
        found = [(t, c) for t in range(7) for c in range(7) if torch.equal(images[b, :, t:t + 4, c:c + 4], crops[b])]
        assert len(found) == 1


def test_padding_adds_zero_borders():
    images = torch.full((64, 3, 20, 20), 200, dtype=torch.uint8)
    crops = random_crop(images, 20, padding=6, generator=torch.Generator().manual_seed(0))
    assert (crops == 0).any()  # some crops reach into the zero padding


def test_zoom_and_rotation_are_per_sample_and_exact_when_off():
    from agestudy.data.augment import random_affine

    x = torch.rand(8, 3, 32, 32)
    # zero range: the warp is the identity (up to bilinear rounding)
    assert torch.allclose(random_affine(x, 0.0, 0.0, torch.Generator().manual_seed(0)), x, atol=1e-5)
    same = x[:1].expand(8, -1, -1, -1)
    out = random_affine(same, 0.2, 15.0, torch.Generator().manual_seed(0))
    assert out.shape == same.shape
    assert len({round(float((v - same[0]).abs().sum()), 3) for v in out}) == 8  # each sample its own warp
    # zoom and rotation turn about the centre, and reflection leaves no black corners
    bright = torch.rand(16, 3, 33, 33) * 0.5 + 0.5
    warped = random_affine(bright, 0.3, 30.0, torch.Generator().manual_seed(2))
    assert torch.allclose(warped[..., 16, 16], bright[..., 16, 16], atol=1e-4)
    assert warped.min() >= 0.5 - 1e-5
    out_u8 = augment_batch(torch.randint(0, 256, (4, 3, 100, 100), dtype=torch.uint8),
                           AugmentConfig(crop=88, scale=0.1, rotate=10), torch.Generator().manual_seed(0))
    assert out_u8.shape == (4, 3, 88, 88) and out_u8.dtype == torch.float32


def test_grayscale_blur_and_erase_are_per_sample_and_off_at_zero():
    from agestudy.data.augment import ERASE_AREA, random_blur, random_erase, random_grayscale

    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 40, 40)
    for op in (random_grayscale, random_blur, random_erase):
        assert torch.equal(op(x, 0.0, g), x)  # probability 0: untouched
    grey = random_grayscale(x, 0.5, g)
    is_grey = (grey[:, 0] == grey[:, 1]).all(dim=(1, 2)) & (grey[:, 1] == grey[:, 2]).all(dim=(1, 2))
    assert 16 < int(is_grey.sum()) < 48  # about half the samples, each with its own draw
    assert torch.equal(grey[~is_grey], x[~is_grey])
    assert torch.allclose(grey[is_grey][:, 0], (x[is_grey] * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1))
    # a blur keeps a flat image flat and the mean of a textured one, and smooths it (less variation)
    flat = torch.full((4, 3, 20, 20), 0.3)
    assert torch.allclose(random_blur(flat, 1.0, g), flat, atol=1e-6)
    blurred = random_blur(x, 1.0, g)
    assert torch.allclose(blurred.mean(), x.mean(), atol=1e-2)
    variation = (blurred.diff(dim=-1).abs().mean(dim=(1, 2, 3)) < x.diff(dim=-1).abs().mean(dim=(1, 2, 3)))
    assert variation.all()
    assert len({round(float(v.std()), 5) for v in blurred}) > 50  # each sample its own sigma
    # erasing: one axis-aligned rectangle per chosen sample, of ERASE_AREA's share of the image, set to 0
    ones = torch.ones(200, 3, 40, 40)
    erased = random_erase(ones, 1.0, g)
    for v in erased:
        hole = (v == 0).all(0)
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert int(hole.sum()) == len(rows) * len(cols)  # a filled rectangle
        assert 0.5 * ERASE_AREA[0] <= float(hole.float().mean()) <= 1.5 * ERASE_AREA[1]
    assert len({tuple((v == 0).all(0).nonzero()[0].tolist()) for v in erased}) > 100  # its own place


def test_trivial_augment_is_per_sample_seeded_by_the_generator_and_off_at_zero():
    from agestudy.data.augment import trivial_augment

    images = torch.randint(0, 256, (64, 3, 40, 40), dtype=torch.uint8)
    assert torch.equal(trivial_augment(images, 0.0, torch.Generator().manual_seed(0)), images)
    torch.manual_seed(1)
    a = trivial_augment(images, 0.5, torch.Generator().manual_seed(3))
    after = torch.rand(1)
    torch.manual_seed(1)
    assert torch.equal(torch.rand(1), after)  # torch's global random numbers are left as they were
    torch.manual_seed(2)  # other global random numbers: the same views from the same generator
    b = trivial_augment(images, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.uint8
    changed = (a != images).flatten(1).any(1)
    chosen = torch.rand(64, generator=torch.Generator().manual_seed(3)) < 0.5  # the function's first draw
    assert not (changed & ~chosen).any()  # only the chosen samples change
    assert 0.7 * int(chosen.sum()) < int(changed.sum())  # most of them (none is one of its operations)
    assert not torch.equal(a, trivial_augment(images, 0.5, torch.Generator().manual_seed(4)))
    every = trivial_augment(images, 1.0, torch.Generator().manual_seed(3))
    assert int((every != images).flatten(1).any(1).sum()) > 40  # each image its own operation, mostly not none
    config = AugmentConfig(trivial=1.0)
    assert config.geometric().trivial == 0.0  # test-time views never draw it
    # wired into training: the option reaches augment_batch, which applies it to the crop
    from agestudy.config import TrainConfig

    assert TrainConfig(trivial=0.5).augment().trivial == 0.5
    plain = AugmentConfig(crop=40, padding=0, random_crop=False, flip=False, jitter=0.0)
    trained = augment_batch(images, replace(plain, trivial=1.0), torch.Generator().manual_seed(3))
    assert not torch.equal(trained, augment_batch(images, plain, torch.Generator().manual_seed(3)))


def test_training_augmentation_leaves_evaluation_views_alone():
    from agestudy.predict import model_inputs

    images = torch.randint(0, 256, (8, 3, 100, 100), dtype=torch.uint8)
    plain, strong = AugmentConfig(), AugmentConfig(grayscale=1.0, blur=1.0, erase=1.0)
    out = augment_batch(images, strong, torch.Generator().manual_seed(0))
    assert (out == 0).all(1).any()  # an erased patch
    for view in ("centre", "ten", "crops(3)"):
        a = model_inputs(images, view, plain, torch.Generator().manual_seed(1))
        b = model_inputs(images, view, strong, torch.Generator().manual_seed(1))
        assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_center_crop_is_the_middle():
    images = torch.randint(0, 256, (3, 3, 100, 100), dtype=torch.uint8)
    assert torch.equal(center_crop(images, 88), images[..., 6:94, 6:94])


def test_augmentation_grid_png(tmp_path):
    images = torch.randint(0, 256, (3, 3, 100, 100), dtype=torch.uint8)
    path = save_augmentation_grid(images, AugmentConfig(crop=80, padding=4), tmp_path / "aug.png", n_versions=4)
    with Image.open(path) as im:
        assert im.size[0] > 300 and im.size[1] > 200
