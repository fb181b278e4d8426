"""Tests for the procedural synthetic demo data (agestudy.data.synthetic)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agestudy.data import synthetic

REPO_ROOT = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict:
    """Relative path -> bytes of every image below root."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix == ".jpg"}


def _run_cli(*args, cwd=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "agestudy.data.synthetic", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd or REPO_ROOT, timeout=120)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    counts = synthetic.generate(out, per_class=10, seed=0, test_fraction=0.2, progress=False)
    return out, counts


def test_layout_and_counts(small_set):
    out, counts = small_set
    assert counts == {"train": {0: 10, 1: 10}, "test": {0: 2, 1: 2}}
    for split, per_label in counts.items():
        for label, n in per_label.items():
            files = list((out / split / str(label)).glob("*.jpg"))
            assert len(files) == n, (split, label)
    assert sorted(p.name for p in out.iterdir()) == ["SYNTHETIC.txt", "test", "train"]


def test_test_fraction_rounding(tmp_path):
    counts = synthetic.generate(tmp_path / "d", per_class=7, seed=1, test_fraction=0.5, progress=False)
    assert counts["test"] == {0: 4, 1: 4}  # round(7 * 0.5)
    assert len(list((tmp_path / "d" / "test" / "1").glob("*.jpg"))) == 4


def test_images_are_100x100_rgb_and_not_blank(small_set):
    out, _ = small_set
    for p in sorted(out.rglob("*.jpg")):
        with Image.open(p) as im:
            assert im.format == "JPEG"
            assert im.mode == "RGB"
            assert im.size == (100, 100)
            arr = np.asarray(im, dtype=np.float32)
        assert arr.std() > 10, f"{p} looks blank"


def test_marker_and_is_synthetic(small_set, tmp_path):
    out, _ = small_set
    text = (out / "SYNTHETIC.txt").read_text(encoding="utf-8")
    assert "SYNTHETIC" in text and "NOT PHOTOS OF REAL PEOPLE" in text
    assert "per_class=10" in text and "seed=0" in text
    assert synthetic.is_synthetic(out)
    assert synthetic.is_synthetic(str(out))
    assert not synthetic.is_synthetic(tmp_path)
    assert not synthetic.is_synthetic(tmp_path / "does-not-exist")


def test_deterministic_same_seed(small_set, tmp_path):
    out, _ = small_set
    again = tmp_path / "again"
    synthetic.generate(again, per_class=10, seed=0, test_fraction=0.2, progress=False)
    a, b = _files(out), _files(again)
    assert len(a) == 24
    assert a == b
    assert (out / "SYNTHETIC.txt").read_bytes() == (again / "SYNTHETIC.txt").read_bytes()


def test_different_seed_differs(small_set, tmp_path):
    out, _ = small_set
    other = tmp_path / "other"
    synthetic.generate(other, per_class=10, seed=1, test_fraction=0.2, progress=False)
    a, b = _files(out), _files(other)
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a)


def test_images_within_a_set_differ(small_set):
    out, _ = small_set
    blobs = list(_files(out).values())
    assert len(set(blobs)) == len(blobs)


def test_old_faces_show_more_grey_white_pixels():
    # Grey/white hair is one of the drawn age cues: bright, unsaturated pixels in
    # the upper half of the image (hair, forehead) are much more common for label 1.
    def grey_white_fraction(label):
        fracs = []
        for i in range(40):
            img = synthetic.render_face(label, np.random.default_rng([3, label, i]))
            top = np.asarray(img, dtype=np.float32)[:50]
            grey_white = (top.min(-1) > 150) & (top.max(-1) - top.min(-1) < 30)
            fracs.append(grey_white.mean())
        return float(np.mean(fracs))

    young, old = grey_white_fraction(0), grey_white_fraction(1)
    assert old > 1.8 * young, (young, old)


def test_age_cues_are_probabilistic_and_overlap():
    # Cues grow with label on average, but some young faces show a cue and some
    # old faces show almost none: the task must not be solvable at 100%.
    rng = np.random.default_rng(0)
    totals = {0: [], 1: []}
    for i in range(2000):
        label = i % 2
        face = synthetic._sample_face(rng, label)
        assert set(face.cues) == set(synthetic._AGE_CUES)
        assert all(0.0 <= v <= 1.0 for v in face.cues.values())
        totals[label].append(sum(face.cues.values()))
    young, old = np.array(totals[0]), np.array(totals[1])
    assert old.mean() > young.mean() + 2.0
    threshold = (young.mean() + old.mean()) / 2
    overlap = (np.mean(young > threshold) + np.mean(old < threshold)) / 2
    assert 0.01 < overlap < 0.2, overlap
    assert np.mean(young > 0) > 0.05  # some young faces carry a faint cue


def test_render_face_rejects_bad_label():
    with pytest.raises(ValueError):
        synthetic.render_face(2, np.random.default_rng(0))


def test_overwrite_previous_synthetic_output(tmp_path):
    out = tmp_path / "d"
    synthetic.generate(out, per_class=6, seed=0, test_fraction=0.5, progress=False)
    synthetic.generate(out, per_class=3, seed=0, test_fraction=0.0, progress=False)
    assert len(list((out / "train" / "0").glob("*.jpg"))) == 3  # stale files removed
    assert len(list((out / "test" / "1").glob("*.jpg"))) == 0
    assert "per_class=3" in (out / "SYNTHETIC.txt").read_text(encoding="utf-8")


def test_refuses_foreign_non_empty_dir(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        synthetic.generate(tmp_path, per_class=2, progress=False)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert not (tmp_path / "train").exists()


@pytest.mark.parametrize("kwargs", [
    {"per_class": 0}, {"per_class": -3}, {"per_class": 2.5}, {"per_class": True},
    {"per_class": 2, "seed": -1}, {"per_class": 2, "test_fraction": 1.5},
    {"per_class": 2, "test_fraction": -0.1},
])
def test_generate_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        synthetic.generate(tmp_path / "d", progress=False, **kwargs)
    assert not (tmp_path / "d").exists()


def test_cli_writes_data_and_says_synthetic(tmp_path):
    out = tmp_path / "cli"
    r = _run_cli(out, "--per-class", 3, "--seed", 5, "--test-fraction", 0.34)
    assert r.returncode == 0, r.stderr
    assert "SYNTHETIC" in r.stdout
    assert "class 0: 3" in r.stdout and "class 1: 1" in r.stdout
    assert synthetic.is_synthetic(out)
    assert len(list((out / "train" / "1").glob("*.jpg"))) == 3
    assert len(list((out / "test" / "0").glob("*.jpg"))) == 1


@pytest.mark.parametrize("args", [
    ["--per-class", "0"],
    ["--per-class", "ten"],
    ["--per-class", "3", "--test-fraction", "2"],
])
def test_cli_bad_arguments_exit_2_one_line(tmp_path, args):
    out = tmp_path / "cli"
    r = _run_cli(out, *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "error" in lines[0]
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_cli_refuses_foreign_directory(tmp_path):
    (tmp_path / "notes.md").write_text("mine")
    r = _run_cli(tmp_path, "--per-class", "2")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "not empty" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "train").exists()


def test_cli_refuses_file_as_output(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("x")
    r = _run_cli(target, "--per-class", "2")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "not a directory" in r.stderr


def test_cli_help():
    r = _run_cli("--help")
    assert r.returncode == 0
    assert "SYNTHETIC" in r.stdout and "--per-class" in r.stdout and "--seed" in r.stdout
