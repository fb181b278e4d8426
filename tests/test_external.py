"""Q10's face framing: the geometry, the eye pair rules, the fallback to the box, and the shared photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA as SHARED
from PIL import Image
from test_analyses import drawn_face_photo

from agestudy.analyses import q10_external as q

TARGETS = np.array([q.EYE_LEFT, q.EYE_RIGHT]) * q.IMAGE_SIZE


def apply(m: np.ndarray, point) -> np.ndarray:
    return m[:, :2] @ np.asarray(point, dtype=float) + m[:, 2]


def dark_centroids(crop: np.ndarray) -> np.ndarray:
    """Centres (continuous pixel coordinates) of the dark blobs in the left and right halves of an H x W x 3 crop."""
    gray = crop.mean(axis=2)
    weight = np.clip(128 - gray, 0, None)
    ys, xs = np.mgrid[: gray.shape[0], : gray.shape[1]] + 0.5
    half = gray.shape[1] // 2
    return np.array([[(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()]
                     for w in (np.where(xs < half, weight, 0), np.where(xs >= half, weight, 0))])


def photo_with_eyes(left, right, size=(600, 500), radius=6.0) -> np.ndarray:
    """A light photo with two dark discs (the "eyes") centred on the given continuous coordinates."""
    ys, xs = np.mgrid[: size[1], : size[0]] + 0.5
    dark = np.zeros(xs.shape, bool)
    for cx, cy in (left, right):
        dark |= (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
    return np.repeat(np.where(dark, 20, 220).astype(np.uint8)[..., None], 3, axis=2)


def test_similarity_takes_two_points_onto_two_points():
    rng = np.random.default_rng(0)
    for _ in range(20):
        src, dst = rng.uniform(0, 500, (2, 2)), rng.uniform(0, 100, (2, 2))
        m = q.similarity(tuple(map(tuple, src)), tuple(map(tuple, dst)))
        np.testing.assert_allclose([apply(m, p) for p in src], dst, atol=1e-9)
        assert m[0, 0] == pytest.approx(m[1, 1]) and m[0, 1] == pytest.approx(-m[1, 0])  # no shear, no flip


def test_eye_framing_puts_the_eyes_where_the_data_set_has_them():
    left, right = (231.0, 187.5), (402.0, 118.0)
    m = q.eye_framing(left, right)
    np.testing.assert_allclose([apply(m, left), apply(m, right)], TARGETS, atol=1e-9)
    assert q.compose(m, np.array([[1.0, 0, 5], [0, 1, -3]]))[:, 2] == pytest.approx(apply(m, (5, -3)))


@pytest.mark.parametrize("tilt_degrees, eye_gap", [(0, 60), (-25, 200), (22, 340)])
def test_a_tilted_face_comes_out_levelled_with_its_eyes_on_the_targets(tilt_degrees, eye_gap):
    # eye_gap 340 shrinks the photo 9-fold: warped at its own resolution, then averaged down
    t = np.radians(tilt_degrees)
    left = np.array([150.3, 260.8])
    right = left + eye_gap * np.array([np.cos(t), -np.sin(t)])
    photo = photo_with_eyes(left, right, radius=eye_gap / 12)
    crop = q.warp(photo, q.eye_framing(tuple(left), tuple(right)), q.IMAGE_SIZE)
    assert crop.shape == (q.IMAGE_SIZE, q.IMAGE_SIZE, 3)
    found = dark_centroids(crop)
    np.testing.assert_allclose(found, TARGETS, atol=0.35)  # to a third of a pixel: the half-pixel convention holds
    assert abs(found[0, 1] - found[1, 1]) < 0.35


def test_box_framing_centres_the_box_like_the_data_set_even_when_turned():
    shape = (480, 640, 3)
    for turn in (0, -15, 30):
        face = q.Face((200, 150, 120, 120), turn)
        m = q.box_framing(face, shape)
        back = np.linalg.inv(np.vstack([q.turning(shape, turn), [0, 0, 1]]))[:2]  # turned photo -> photo
        centre, right_edge = apply(back, (260, 210)), apply(back, (320, 210))  # box centre, middle of its right side
        np.testing.assert_allclose(apply(m, centre), (50, 50 - q.FACE_SHIFT_DOWN * 100), atol=1e-9)
        np.testing.assert_allclose(apply(m, right_edge) - apply(m, centre), (50 / q.FACE_MARGIN, 0), atol=1e-9)


def test_eye_pair_rules():
    left, right = (0.29, 0.30, 0.12), (0.68, 0.30, 0.12)
    assert q.eye_pair([left, right]) == ((0.29, 0.30), (0.68, 0.30))
    assert q.eye_pair([right, left, (0.50, 0.55, 0.10)]) == ((0.29, 0.30), (0.68, 0.30))  # a nostril: no partner
    # the same eye found twice, and a detection on the bridge of the nose: the spacing nearest the data set's wins
    assert q.eye_pair([left, (0.36, 0.30, 0.12), right, (0.55, 0.31, 0.12)]) == ((0.29, 0.30), (0.68, 0.30))
    assert q.eye_pair([left]) is None and q.eye_pair([]) is None
    assert q.eye_pair([(0.2, 0.3, 0.1), (0.45, 0.3, 0.1)]) is None  # both left of the middle
    assert q.eye_pair([(0.3, 0.20, 0.1), (0.7, 0.45, 0.1)]) is None  # tilted by 32 degrees
    assert q.eye_pair([(0.05, 0.3, 0.1), (0.95, 0.3, 0.1)]) is None  # too far apart for a face framed by its box
    assert q.eye_pair([(0.3, 0.3, 0.05), (0.7, 0.3, 0.15)]) is None  # sizes too different


def test_a_face_without_eyes_found_falls_back_to_its_box(monkeypatch):
    detectors = q.load_detectors()
    photo = np.full((300, 400, 3), 128, np.uint8)
    photo[100:200, 150:250] = (200, 150, 120)  # a flat patch: no eye for the cascades to find
    face = q.Face((150, 100, 100, 100), 0)
    crop, framing, eyes = q.frame_face(detectors, photo, face)
    assert (framing, eyes) == ("box", None) and crop.shape == (3, q.IMAGE_SIZE, q.IMAGE_SIZE)
    by_box = q.warp(photo, q.box_framing(face, photo.shape), q.IMAGE_SIZE)
    np.testing.assert_array_equal(crop, by_box.transpose(2, 0, 1))

    # eyes found in the box crop: mapped back into the photo, then onto the targets
    monkeypatch.setattr(q, "find_eyes", lambda cascades, gray: ((0.3, 0.32), (0.66, 0.28)))
    crop, framing, eyes = q.frame_face(detectors, photo, face)
    assert framing == "eyes"
    search = q.box_framing(face, photo.shape, q.EYE_SEARCH_SIDE)
    np.testing.assert_allclose([apply(search, e) for e in eyes], np.array([(0.3, 0.32), (0.66, 0.28)]) * 200, atol=1e-6)


def test_a_tilted_drawn_face_is_found_in_a_turned_copy_and_its_eyes_measure_the_tilt():
    def eye_tilt(photo: np.ndarray) -> float:
        face, _ = q.detect_face(detectors, photo)
        _, framing, eyes = q.frame_face(detectors, photo, face)
        assert framing == "eyes"
        (lx, ly), (rx, ry) = eyes
        return np.degrees(np.arctan2(ly - ry, rx - lx))  # counter-clockwise; eye_framing levels it

    detectors = q.load_detectors()
    drawn = drawn_face_photo(1, 0)
    upright = np.asarray(drawn)
    assert q.detect_face(detectors, upright)[0].turn == 0
    tilted = np.asarray(drawn.rotate(25, resample=Image.Resampling.BICUBIC, fillcolor=(90, 110, 130)))
    assert not q.faces_in(detectors.face, cv2.cvtColor(tilted, cv2.COLOR_RGB2GRAY))  # the upright search misses it...
    assert q.detect_face(detectors, tilted)[0].turn < 0  # ...a copy turned clockwise finds it
    assert eye_tilt(tilted) - eye_tilt(upright) == pytest.approx(25, abs=4)


@pytest.mark.skipif(not (SHARED / "external-faces").is_dir(), reason="../shared/data/external-faces is absent")
def test_the_shared_photos_are_all_found_and_mostly_framed_by_the_eyes():
    photos, _ = q.list_photos(SHARED / "external-faces")
    assert len(photos) >= 10 and all(label in (0, 1) for _, label in photos)
    detectors = q.load_detectors()
    found, by_eyes = 0, 0
    for path, _ in photos:
        rgb = q.read_photo(path)
        assert rgb is not None and rgb.ndim == 3
        face, _ = q.detect_face(detectors, rgb)
        if face is None:
            continue
        found += 1
        crop, framing, _ = q.frame_face(detectors, rgb, face)
        assert crop.shape == (3, q.IMAGE_SIZE, q.IMAGE_SIZE)
        if framing == "eyes":
            by_eyes += 1
            # searched again in the aligned crop, the eyes are where the data set has them
            again = q.find_eyes(detectors.eyes, cv2.cvtColor(crop.transpose(1, 2, 0), cv2.COLOR_RGB2GRAY))
            if again is not None:
                np.testing.assert_allclose(np.array(again) * q.IMAGE_SIZE, TARGETS, atol=6, err_msg=str(path))
    assert found >= len(photos) - 1
    assert by_eyes >= 0.8 * found


@pytest.mark.skipif(not (SHARED / "faces-dev" / "train").is_dir(), reason="../shared/data/faces-dev is absent")
def test_the_framing_constants_are_those_measured_on_the_data_set():
    crops = sorted((SHARED / "faces-dev" / "train").glob("*/*.jpg"))[::40]  # a sample: the whole takes minutes
    measured = q.measure_framing(crops, q.load_detectors())
    assert measured["with_eyes"] >= 0.7 * len(crops) and measured["with_box"] >= 0.9 * len(crops)
    np.testing.assert_allclose(measured["eye_left"], q.EYE_LEFT, atol=0.02)
    np.testing.assert_allclose(measured["eye_right"], q.EYE_RIGHT, atol=0.02)
    assert measured["face_margin"] == pytest.approx(q.FACE_MARGIN, abs=0.05)
    assert measured["face_shift_down"] == pytest.approx(q.FACE_SHIFT_DOWN, abs=0.03)
