"""Q10: photos from outside the data set.

``--external DIR`` takes photos of any size and format: DIR/*.jpg (no label) and/or
DIR/0/*, DIR/1/* (labelled 0 = aged 20-26, 1 = aged 52-62). Each photo is decoded like the
data set's images (EXIF rotation applied, grayscale / RGBA / CMYK / palette to RGB), the
face is found with OpenCV's bundled Haar cascade (offline, nothing downloaded), framed like
the training crops, resized to 100x100 and predicted from its centre crop like a test image.
A photo without a detected face, or that cannot be read, is listed as such, never dropped.
Accuracy is given over the labelled photos with a face, with an exact 95 % interval.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from agestudy import plots
from agestudy.data.folders import IMAGE_EXTENSIONS
from agestudy.errors import UserError
from agestudy.predict import probabilities
from agestudy.runs import EXTERNAL_TAG

IMAGE_SIZE = 100
CASCADE = "haarcascade_frontalface_default.xml"  # its framing is the one measured below
# Framing: the Haar box covers brows to mouth. On faces-dev's own 100x100 crops (UTKFace
# "aligned and cropped"), the cascade's box is 1/1.22 of the image side (median of 59
# detections) and its centre sits 7 % of the side above the image centre. So the crop is
# 1.22 box sides wide, centred 7 % of its side below the box centre. CACD's crops are a bit
# looser; change these two if the lab data frames faces differently.
FACE_MARGIN = 1.22
FACE_SHIFT_DOWN = 0.07
MIN_FACE_FRACTION = 0.08  # ignore detections smaller than 8 % of the photo's short side (background faces)
DETECT_MAX_SIDE = 1024  # detect on a copy at most this large: Haar cost grows with pixels


def load_detector():
    try:
        import cv2
    except ImportError:
        raise UserError("question 10 needs OpenCV: pip install 'opencv-python-headless>=4.8,<5'") from None
    path = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "") / CASCADE
    if not hasattr(cv2, "CascadeClassifier") or not path.is_file():
        raise UserError(f"OpenCV {cv2.__version__} has no bundled Haar face cascade (OpenCV 5 dropped it): "
                        "pip install 'opencv-python-headless>=4.8,<5'")
    detector = cv2.CascadeClassifier(str(path))
    if detector.empty():
        raise UserError(f"could not load {path}")
    return detector


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


def detect_face(detector, rgb: np.ndarray) -> tuple[tuple[int, int, int, int] | None, int]:
    """The largest face box (x, y, w, h) in photo pixels, and how many faces were found."""
    import cv2

    h, w = rgb.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    side = max(24, int(MIN_FACE_FRACTION * min(gray.shape)))
    # OpenCV's usual settings. (Histogram equalisation first found no more faces on the FG-NET photos
    # but added a false one in grey hair, so the plain grayscale it is.)
    faces = detector.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
    if len(faces) == 0:
        return None, 0
    x, y, bw, bh = max(faces, key=lambda b: b[2] * b[3])
    return tuple(int(round(v / scale)) for v in (x, y, bw, bh)), len(faces)


def frame_face(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Crop the face like the data set frames it, resized to 3 x 100 x 100 uint8."""
    import cv2

    x, y, w, h = box
    side = FACE_MARGIN * max(w, h)
    cx, cy = x + w / 2, y + h / 2 + FACE_SHIFT_DOWN * side
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    size = int(round(side))
    # beyond the photo's edge: repeat the border pixels rather than add black, which training never saw
    pad = max(0, -left, -top, left + size - rgb.shape[1], top + size - rgb.shape[0])
    if pad:
        rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        left, top = left + pad, top + pad
    face = rgb[top : top + size, left : left + size]
    face = cv2.resize(face, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA if size > IMAGE_SIZE
                      else cv2.INTER_CUBIC)
    return np.ascontiguousarray(face.transpose(2, 0, 1))


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
    detector = load_detector()

    rows, crops, thumbs = [], [], []
    for path, label in photos:
        rel = path.relative_to(folder).as_posix()
        row = {"file": rel, "label": label, "status": "", "n_faces": 0, "box": None, "width": None, "height": None,
               "p0": None, "p1": None, "predicted": None, "correct": None}
        rgb = read_photo(path)
        if rgb is None:
            row["status"] = "unreadable"
        else:
            row["height"], row["width"] = rgb.shape[:2]
            box, n_faces = detect_face(detector, rgb)
            row["n_faces"] = n_faces
            if box is None:
                row["status"] = "no face found"
                thumbs.append((thumbnail(rgb), rel))
            else:
                row["status"] = "face" if n_faces == 1 else f"face (largest of {n_faces})"
                row["box"] = list(box)
                crops.append(frame_face(rgb, box))
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
        return f"{Path(row['file']).stem[:12]} y={label}\np1={row['p1']:.2f}{wrong}"

    with_face = [r for r in rows if "_crop" in r]
    plots.gallery([crops[r["_crop"]] for r in with_face], [caption(r) for r in with_face], ctx.path("crops.png"),
                  ncols=6, title="External photos: the detected faces as framed for the network (X = wrong)")
    ctx.log_figure(ctx.path("crops.png"))
    plots.gallery([t for t, _ in thumbs], [Path(n).name[:18] for _, n in thumbs], ctx.path("no_face.png"),
                  ncols=6, title="External photos where no face was found")
    ctx.log_figure(ctx.path("no_face.png"))

    for row in rows:
        row.pop("_crop", None)
    path = ctx.path("predictions.csv")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label", "status", "n_faces", "box_xywh", "width", "height", "p0", "p1",
                         "predicted", "correct"])
        for r in rows:
            writer.writerow([r["file"], "" if r["label"] is None else r["label"], r["status"], r["n_faces"],
                             " ".join(map(str, r["box"])) if r["box"] else "", r["width"] or "", r["height"] or "",
                             "" if r["p0"] is None else f"{r['p0']:.6f}", "" if r["p1"] is None else f"{r['p1']:.6f}",
                             "" if r["predicted"] is None else r["predicted"],
                             "" if r["correct"] is None else int(r["correct"])])
    ctx.log_file(path)

    judged = [r for r in rows if r["correct"] is not None]
    n_right = sum(r["correct"] for r in judged)
    headline = {"n_photos": len(rows), "n_faces_found": len(with_face),
                "n_no_face": sum(r["status"] == "no face found" for r in rows),
                "n_unreadable": sum(r["status"] == "unreadable" for r in rows),
                "n_labelled": sum(r["label"] is not None for r in rows), "n_judged": len(judged)}
    summary = {
        "status": "measured",
        "folder": str(folder),
        "procedure": f"Photos decoded with EXIF rotation and converted to RGB; OpenCV Haar cascade {CASCADE} on the "
                     f"grayscale photo (scaleFactor 1.1, minNeighbors 5, faces >= "
                     f"{MIN_FACE_FRACTION:.0%} of the short side; the largest face kept); square crop of "
                     f"{FACE_MARGIN} x the box side, centred {FACE_SHIFT_DOWN:.0%} of the crop below the box centre "
                     f"(the framing measured on faces-dev), border pixels repeated beyond the photo, resized to "
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
