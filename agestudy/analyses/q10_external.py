"""Q10: photos from outside the data set.

``--external DIR`` takes photos of any size and format: DIR/*.jpg (no label) and/or
DIR/0/*, DIR/1/* (labelled 0 = aged 20-26, 1 = aged 52-62). Each photo is decoded like the
data set's images (EXIF rotation applied, grayscale / RGBA / CMYK / palette to RGB). The face
is found with OpenCV's bundled Haar cascades (offline, nothing downloaded): the frontal face
cascade on the photo, and on copies of it turned by up to 30 degrees when the upright photo
shows none (tilted heads). The face is then framed like the training crops, which are aligned
by the eyes: the eye cascades look for both eyes in the face, and a similarity transform
(rotation, scale, shift) puts them where the eyes sit in the data set's crops, which levels
a tilted head. When no plausible pair of eyes is found, the face box is cropped instead,
with the box-to-crop proportions measured on the data set's crops. The 100x100 crop is
predicted from its centre crop like a test image. Each photo's framing ("eyes" or "box") is
in predictions.csv and summary.json. A photo without a detected face, or that cannot be read,
is listed as such, never dropped. Accuracy is given over the labelled photos with a face,
with an exact 95 % interval.

The framing constants come from the data set's crops, never from the external photos:
``python -m agestudy.analyses.q10_external DIR`` measures them on DIR's images (e.g. a
data set's train/ folder) with the same detectors.
"""

from __future__ import annotations

import csv
import itertools
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps

from agestudy import plots
from agestudy.data.folders import IMAGE_EXTENSIONS
from agestudy.errors import UserError
from agestudy.predict import probabilities
from agestudy.runs import EXTERNAL_TAG

IMAGE_SIZE = 100
FACE_CASCADE = "haarcascade_frontalface_default.xml"
# the eyeglasses cascade only where the plain eye cascade finds no pair: without glasses it finds fewer eyes
EYE_CASCADES = ("haarcascade_eye.xml", "haarcascade_eye_tree_eyeglasses.xml")
MIN_FACE_FRACTION = 0.08  # ignore detections smaller than 8 % of the photo's short side (background faces)
DETECT_MAX_SIDE = 1024  # detect on a copy at most this large: Haar cost grows with pixels
# The frontal cascade misses heads tilted by more than about 10 degrees: when the upright photo shows
# no face, copies turned by these angles (degrees, counter-clockwise) are searched (see detect_face).
TURNS = (-15, 15, -30, 30)

# Where the data set puts the face. Measured on faces-dev's 2327 train crops (UTKFace "aligned and
# cropped", 100x100) by measure_framing(), `python -m agestudy.analyses.q10_external faces-dev/train`:
# medians over the crops where the detectors found something. Measure again if the lab data frames
# faces differently. Eyes: find_eyes() found a pair on 1966 crops; their centres in fractions of the
# side (interquartile ranges 0.02-0.03: the crops are aligned by landmarks, so the eyes barely move).
EYE_LEFT = (0.288, 0.292)  # the eye on the image's left
EYE_RIGHT = (0.675, 0.292)
# Box (the fallback when no eyes are found): the face cascade, run on each crop padded by half its side
# of repeated border (so that it sees the face whole, with surroundings, as in a photo), found a face on
# 2249 crops. The crop is FACE_MARGIN box sides wide, centred FACE_SHIFT_DOWN of its side below the box
# centre. (Unpadded crops give about 1.23 and 0.07, but only from the 54 % of crops where a face is
# found, those whose box fits inside: too loose a frame.)
FACE_MARGIN = 0.971
FACE_SHIFT_DOWN = 0.085

# The eye search, in the face framed by its box and brought to EYE_SEARCH_SIDE pixels (Haar's eye model
# is 20 pixels: eyes of a 100-pixel crop are too small for it). A pair must look like two eyes of a
# face framed like the data set's (0.39 side apart there): one each side of the middle, in the upper
# 60 %, EYE_DISTANCE sides apart, tilted at most 27 degrees, of similar sizes. Of several such pairs
# (a third detection on the bridge of the nose, or the same eye found twice), the one whose spacing is
# nearest the data set's, EYE_RIGHT[0] - EYE_LEFT[0].
EYE_SEARCH_SIDE = 200
EYE_SEARCH_TOP = 0.6
EYE_DISTANCE = (0.25, 0.6)
MAX_EYE_SLOPE = 0.5  # |dy| / dx
MAX_EYE_SIZE_RATIO = 1.6


class Detectors(NamedTuple):
    face: object  # cv2.CascadeClassifier
    eyes: tuple  # cv2.CascadeClassifier in EYE_CASCADES' order


class Face(NamedTuple):
    box: tuple[int, int, int, int]  # x, y, w, h in the photo turned by `turn` degrees (0: the photo itself)
    turn: float  # counter-clockwise, about the photo's centre, on a canvas of the photo's size


def load_detectors() -> Detectors:
    try:
        import cv2
    except ImportError:
        raise UserError("question 10 needs OpenCV: pip install 'opencv-python-headless>=4.8,<5'") from None
    folder = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "")

    def load(name: str):
        path = folder / name
        if not hasattr(cv2, "CascadeClassifier") or not path.is_file():
            raise UserError(f"OpenCV {cv2.__version__} has no bundled Haar cascade {name} (OpenCV 5 dropped them): "
                            "pip install 'opencv-python-headless>=4.8,<5'")
        cascade = cv2.CascadeClassifier(str(path))
        if cascade.empty():
            raise UserError(f"could not load {path}")
        return cascade

    return Detectors(load(FACE_CASCADE), tuple(load(name) for name in EYE_CASCADES))


def read_photo(path: Path) -> np.ndarray | None:
    """Upright RGB array (H x W x 3 uint8), or None if unreadable; decoded like the data set."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                im = ImageOps.exif_transpose(im)  # phones store portraits sideways plus a rotation tag
                if im.mode != "RGB":
                    im = im.convert("RGBA").convert("RGB") if im.mode in ("P", "PA", "LA") else im.convert("RGB")
                return np.asarray(im, dtype=np.uint8).copy()
    except Exception:  # noqa: BLE001 - any decoder failure means "unreadable", reported by the caller
        return None


# Geometry: 2x3 affine maps in continuous pixel coordinates (pixel i spans [i, i+1), so a box's centre
# is x + w/2 and a crop's is size/2); affine() converts to OpenCV's pixel-index convention.

def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The map a(b(p))."""
    return np.hstack([a[:, :2] @ b[:, :2], a[:, :2] @ b[:, 2:] + a[:, 2:]])


def turning(shape: tuple[int, ...], degrees: float) -> np.ndarray:
    """The photo (of this shape) turned counter-clockwise about its centre, on a canvas of the same size."""
    import cv2

    h, w = shape[:2]
    return cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)


def similarity(src: tuple, dst: tuple) -> np.ndarray:
    """The rotation + scale + shift that takes the two points src to the two points dst."""
    (a, b), (c, d) = [complex(*p) for p in src], [complex(*p) for p in dst]
    z = (d - c) / (b - a)  # rotation and scale as one complex factor
    t = c - z * a
    return np.array([[z.real, -z.imag, t.real], [z.imag, z.real, t.imag]])


def affine(image: np.ndarray, m: np.ndarray, width: int, height: int) -> np.ndarray:
    """cv2.warpAffine with m in continuous coordinates; beyond the photo's edge the border pixels are
    repeated rather than black, which training never saw."""
    import cv2

    m = m.astype(np.float64)
    m[:, 2] += 0.5 * m[:, :2].sum(axis=1) - 0.5
    return cv2.warpAffine(image, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warp(rgb: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The size x size crop that m (photo -> crop) makes: warped at about the photo's own resolution,
    then averaged down, so that shrinking a large face does not alias."""
    import cv2

    k = max(1, round(1 / np.hypot(m[0, 0], m[1, 0])))
    out = affine(rgb, k * m, k * size, k * size)
    return cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA) if k > 1 else out


def detect_settings(gray: np.ndarray) -> dict:
    # OpenCV's usual settings. (Histogram equalisation first found no more faces on the FG-NET photos
    # but added a false one in grey hair, so the plain grayscale it is.)
    side = max(24, int(MIN_FACE_FRACTION * min(gray.shape)))
    return {"scaleFactor": 1.1, "minNeighbors": 5, "minSize": (side, side)}


def faces_in(cascade, gray: np.ndarray) -> list[tuple[int, int, int, int]]:
    return [tuple(map(int, box)) for box in cascade.detectMultiScale(gray, **detect_settings(gray))]


def detect_face(detectors: Detectors, rgb: np.ndarray) -> tuple[Face | None, int]:
    """The face and how many faces were found: the largest in the upright photo, else the strongest in its
    turned copies (turning makes false detections in the photo's stretched corners, and a tilted face is
    found at several turns: the cascade's confidence picks the turn that levels it best)."""
    import cv2

    h, w = rgb.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)

    def full_size(box) -> tuple[int, int, int, int]:
        return tuple(int(round(v / scale)) for v in box)

    upright = faces_in(detectors.face, gray)
    if upright:
        return Face(full_size(max(upright, key=lambda b: b[2] * b[3])), 0), len(upright)
    found = []  # (confidence, turn, box)
    for turn in TURNS:
        turned = affine(gray, turning(gray.shape, turn), gray.shape[1], gray.shape[0])
        boxes, _, weights = detectors.face.detectMultiScale3(turned, **detect_settings(turned), outputRejectLevels=True)
        found += [(float(weight), turn, tuple(map(int, box))) for box, weight in zip(boxes, np.ravel(weights))]
    if not found:
        return None, 0
    _, turn, box = max(found)
    return Face(full_size(box), turn), sum(t == turn for _, t, _ in found)


def box_framing(face: Face, shape: tuple[int, ...], size: int = IMAGE_SIZE) -> np.ndarray:
    """photo -> size x size crop of the face box, framed like the data set (FACE_MARGIN, FACE_SHIFT_DOWN)."""
    x, y, w, h = face.box
    side = FACE_MARGIN * max(w, h)
    cx, cy = x + w / 2, y + h / 2 + FACE_SHIFT_DOWN * side  # the crop's centre, in the turned photo
    k = size / side
    cut = np.array([[k, 0, size / 2 - k * cx], [0, k, size / 2 - k * cy]])
    return compose(cut, turning(shape, face.turn))


def eye_framing(left: tuple[float, float], right: tuple[float, float], size: int = IMAGE_SIZE) -> np.ndarray:
    """photo -> size x size crop with the eyes (photo pixels) where the data set has them: levelled."""
    return similarity((left, right), (tuple(size * v for v in EYE_LEFT), tuple(size * v for v in EYE_RIGHT)))


def eye_pair(eyes: list[tuple[float, float, float]]) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Of (x, y, width) detections in fractions of a face crop's side, the pair that can be the two eyes
    (see EYE_DISTANCE and below it) as (left, right) centres, or None."""
    best, best_gap = None, np.inf
    for a, b in itertools.combinations(eyes, 2):
        left, right = sorted((a, b))
        dx, dy = right[0] - left[0], right[1] - left[1]
        gap = abs(dx - (EYE_RIGHT[0] - EYE_LEFT[0]))
        if (left[0] < 0.5 < right[0] and EYE_DISTANCE[0] <= dx <= EYE_DISTANCE[1] and abs(dy) <= MAX_EYE_SLOPE * dx
                and max(left[2], right[2]) <= MAX_EYE_SIZE_RATIO * min(left[2], right[2]) and gap < best_gap):
            best, best_gap = (tuple(map(float, left[:2])), tuple(map(float, right[:2]))), gap
    return best


def find_eyes(cascades, gray: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The two eyes' centres (left, right) in fractions of a square face crop's side, or None."""
    import cv2

    side = EYE_SEARCH_SIDE
    if gray.shape[:2] != (side, side):
        gray = cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA if gray.shape[0] > side else cv2.INTER_CUBIC)
    upper = cv2.equalizeHist(gray)[: int(EYE_SEARCH_TOP * side)]  # equalised: eyes in shadow or low contrast
    for cascade in cascades:
        found = cascade.detectMultiScale(upper, scaleFactor=1.05, minNeighbors=3, minSize=(side // 12, side // 12),
                                         maxSize=(side // 3, side // 3))
        pair = eye_pair([((x + w / 2) / side, (y + h / 2) / side, w / side) for x, y, w, h in found])
        if pair is not None:
            return pair
    return None


def frame_face(detectors: Detectors, rgb: np.ndarray, face: Face) -> tuple[np.ndarray, str, list | None]:
    """The face as the network gets it (3 x 100 x 100 uint8), its framing ("eyes" or "box"), and the eyes'
    centres in photo pixels (None when framed by the box)."""
    import cv2

    by_box = box_framing(face, rgb.shape, EYE_SEARCH_SIDE)
    eyes = find_eyes(detectors.eyes, cv2.cvtColor(warp(rgb, by_box, EYE_SEARCH_SIDE), cv2.COLOR_RGB2GRAY))
    if eyes is None:
        crop, framing, in_photo = warp(rgb, box_framing(face, rgb.shape), IMAGE_SIZE), "box", None
    else:
        back = cv2.invertAffineTransform(by_box)
        in_photo = [tuple(float(v) for v in back @ (EYE_SEARCH_SIDE * x, EYE_SEARCH_SIDE * y, 1)) for x, y in eyes]
        crop, framing = warp(rgb, eye_framing(*in_photo), IMAGE_SIZE), "eyes"
    return np.ascontiguousarray(crop.transpose(2, 0, 1)), framing, in_photo


def measure_framing(paths: list[Path], detectors: Detectors) -> dict:
    """Where the face box and the eyes sit in a data set's own square crops: the medians are the framing
    constants above (EYE_LEFT, EYE_RIGHT, FACE_MARGIN, FACE_SHIFT_DOWN)."""
    import cv2

    boxes, eyes = [], []
    for path in paths:
        rgb = read_photo(path)
        if rgb is None:
            continue
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        side, pad = gray.shape[1], gray.shape[1] // 2
        found = faces_in(detectors.face, cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
        if found:
            x, y, w, h = max(found, key=lambda b: b[2] * b[3])
            boxes.append((side / max(w, h), (side / 2 - (y - pad + h / 2)) / side))
        pair = find_eyes(detectors.eyes, gray)
        if pair is not None:
            eyes.append(np.ravel(pair))
    out = {"images": len(paths), "with_box": len(boxes), "with_eyes": len(eyes)}
    if boxes:
        margin, shift = np.median(boxes, axis=0)
        out.update(face_margin=round(float(margin), 3), face_shift_down=round(float(shift), 3))
    if eyes:
        e = np.median(eyes, axis=0).round(3).tolist()
        out.update(eye_left=tuple(e[:2]), eye_right=tuple(e[2:]))
    return out


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """The whole photo letterboxed into 3 x 100 x 100 (for the gallery of photos without a face)."""
    im = Image.fromarray(rgb)
    im.thumbnail((IMAGE_SIZE, IMAGE_SIZE))
    canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255))
    canvas.paste(im, ((IMAGE_SIZE - im.width) // 2, (IMAGE_SIZE - im.height) // 2))
    return np.asarray(canvas, dtype=np.uint8).transpose(2, 0, 1)


def list_photos(folder: Path) -> tuple[list[tuple[Path, int | None]], list[str]]:
    """(photo, label or None) pairs, and what was ignored."""
    photos, ignored = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() and path.name in ("0", "1"):
            for inner in sorted(path.iterdir()):
                if inner.is_file() and inner.suffix.lower() in IMAGE_EXTENSIONS:
                    photos.append((inner, int(path.name)))
                elif not inner.name.startswith("."):
                    ignored.append(f"{path.name}/{inner.name}")
        elif path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            photos.append((path, None))
        else:
            ignored.append(path.name + ("/" if path.is_dir() else ""))
    return photos, ignored


def run(ctx) -> dict:
    from scipy import stats

    ctx.client.set_tag(ctx.analysis_run_id, EXTERNAL_TAG, str(ctx.external or ""))
    if ctx.external is None:
        ctx.log_table("summary", {"status": "no_external_photos",
                                  "message": "No external photos were given (python -m agestudy.analyze --run RUN "
                                             "--external DIR, with DIR/0/ and DIR/1/ for labelled photos)."})
        ctx.log_metrics({"n_photos": 0})
        return {"n_photos": 0}
    folder = ctx.external
    photos, ignored = list_photos(folder)
    if not photos:
        raise UserError(f"no photos ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {folder}, {folder}/0 or {folder}/1")
    detectors = load_detectors()

    rows, crops, thumbs = [], [], []
    for path, label in photos:
        rel = path.relative_to(folder).as_posix()
        row = {"file": rel, "label": label, "status": "", "n_faces": 0, "turn": None, "box": None, "framing": None,
               "eyes": None, "width": None, "height": None, "p0": None, "p1": None, "predicted": None,
               "correct": None}
        rgb = read_photo(path)
        if rgb is None:
            row["status"] = "unreadable"
        else:
            row["height"], row["width"] = rgb.shape[:2]
            face, n_faces = detect_face(detectors, rgb)
            row["n_faces"] = n_faces
            if face is None:
                row["status"] = "no face found"
                thumbs.append((thumbnail(rgb), rel))
            else:
                notes = [f"photo turned {face.turn:+g} degrees"] if face.turn else []
                if n_faces > 1:
                    notes.append(f"{'strongest' if face.turn else 'largest'} of {n_faces}")
                row["status"] = "face" + (f" ({', '.join(notes)})" if notes else "")
                row["turn"], row["box"] = face.turn, list(face.box)
                crop, row["framing"], eyes = frame_face(detectors, rgb, face)
                row["eyes"] = None if eyes is None else [round(v, 1) for eye in eyes for v in eye]
                crops.append(crop)
                row["_crop"] = len(crops) - 1
        rows.append(row)

    if crops:
        images = torch.from_numpy(np.stack(crops))
        p1 = probabilities(ctx.logits(images)).numpy()
        for row in rows:
            if "_crop" in row:
                p = float(p1[row["_crop"]])
                row.update(p0=1 - p, p1=p, predicted=int(p >= 0.5))
                if row["label"] is not None:
                    row["correct"] = row["predicted"] == row["label"]
        # the crops themselves, one PNG per photo, as the network received them (before its centre crop)
        for row in rows:
            if "_crop" in row:
                path = ctx.path(Path(row["file"]).with_suffix(".png").name)
                Image.fromarray(crops[row["_crop"]].transpose(1, 2, 0)).save(path)
                sub = "crops" + (f"/{row['label']}" if row["label"] is not None else "")
                ctx.log_file(path, sub=sub)
                path.unlink()

    def caption(row) -> str:
        label = "?" if row["label"] is None else row["label"]
        wrong = " X" if row["correct"] is False else ""
        box = " box" if row["framing"] == "box" else ""
        return f"{Path(row['file']).stem[:12]} y={label}\np1={row['p1']:.2f}{wrong}{box}"

    with_face = [r for r in rows if "_crop" in r]
    plots.gallery([crops[r["_crop"]] for r in with_face], [caption(r) for r in with_face], ctx.path("crops.png"),
                  ncols=6, title="External photos: the faces as framed for the network, by the eyes unless "
                                 "marked box (X = wrong)")
    ctx.log_figure(ctx.path("crops.png"))
    plots.gallery([t for t, _ in thumbs], [Path(n).name[:18] for _, n in thumbs], ctx.path("no_face.png"),
                  ncols=6, title="External photos where no face was found")
    ctx.log_figure(ctx.path("no_face.png"))

    for row in rows:
        row.pop("_crop", None)
    path = ctx.path("predictions.csv")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label", "status", "n_faces", "turn", "box_xywh", "framing", "eyes_xy", "width",
                         "height", "p0", "p1", "predicted", "correct"])
        for r in rows:
            writer.writerow([r["file"], "" if r["label"] is None else r["label"], r["status"], r["n_faces"],
                             "" if r["turn"] is None else r["turn"], " ".join(map(str, r["box"])) if r["box"] else "",
                             r["framing"] or "", " ".join(map(str, r["eyes"])) if r["eyes"] else "",
                             r["width"] or "", r["height"] or "",
                             "" if r["p0"] is None else f"{r['p0']:.6f}", "" if r["p1"] is None else f"{r['p1']:.6f}",
                             "" if r["predicted"] is None else r["predicted"],
                             "" if r["correct"] is None else int(r["correct"])])
    ctx.log_file(path)

    judged = [r for r in rows if r["correct"] is not None]
    n_right = sum(r["correct"] for r in judged)
    headline = {"n_photos": len(rows), "n_faces_found": len(with_face),
                "n_framed_by_eyes": sum(r["framing"] == "eyes" for r in rows),
                "n_no_face": sum(r["status"] == "no face found" for r in rows),
                "n_unreadable": sum(r["status"] == "unreadable" for r in rows),
                "n_labelled": sum(r["label"] is not None for r in rows), "n_judged": len(judged)}
    summary = {
        "status": "measured",
        "folder": str(folder),
        "procedure": f"Photos decoded with EXIF rotation and converted to RGB; OpenCV Haar cascade {FACE_CASCADE} "
                     f"on the grayscale photo (scaleFactor 1.1, minNeighbors 5, faces >= {MIN_FACE_FRACTION:.0%} "
                     f"of the short side; the largest face kept), and when it shows none on copies turned by "
                     f"{', '.join(map(str, TURNS))} degrees (the strongest detection kept). Framing by the eyes: "
                     f"cascades {' then '.join(EYE_CASCADES)} in the face's box crop, the plausible pair spaced most "
                     "like the data set's; a similarity transform puts the eyes "
                     f"at ({EYE_LEFT[0]:.3f}, {EYE_LEFT[1]:.3f}) and ({EYE_RIGHT[0]:.3f}, {EYE_RIGHT[1]:.3f}) of the "
                     f"side, where faces-dev's crops have them. Without a plausible pair of eyes, framing by the box: "
                     f"a square crop of {FACE_MARGIN} x the box side, centred {FACE_SHIFT_DOWN:.1%} of the crop below "
                     f"the box centre (measured on faces-dev). Border pixels repeated beyond the photo; "
                     f"{IMAGE_SIZE}x{IMAGE_SIZE}; predicted from the {ctx.cfg.crop}-pixel centre crop like a test "
                     "image. Accuracy over labelled photos with a face; exact 95 % interval.",
        "ignored": ignored,
        "no_face": [r["file"] for r in rows if r["status"] == "no face found"],
        "unreadable": [r["file"] for r in rows if r["status"] == "unreadable"],
        "photos": rows,
        **headline,
    }
    if judged:
        ci = stats.binomtest(n_right, len(judged), 0.5).proportion_ci(0.95, method="exact")
        scores = {"accuracy": n_right / len(judged), "accuracy_ci_low": float(ci.low),
                  "accuracy_ci_high": float(ci.high)}
        for c in (0, 1):
            of_class = [r for r in judged if r["label"] == c]
            if of_class:
                scores[f"class{c}_accuracy"] = sum(r["correct"] for r in of_class) / len(of_class)
        headline = {**scores, **headline}
        summary.update(scores)
    ctx.log_table("summary", summary)
    ctx.log_metrics(headline)
    return headline


if __name__ == "__main__":  # measure the framing constants on a folder of a data set's crops
    if len(sys.argv) != 2:
        sys.exit("usage: python -m agestudy.analyses.q10_external FOLDER_OF_CROPS")
    crops = sorted(p for p in Path(sys.argv[1]).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    print(measure_framing(crops, load_detectors()))
