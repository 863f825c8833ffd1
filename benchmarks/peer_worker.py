"""Worker for the dlib HOG and OpenCV Haar peers, run in the peers' Python environment (dlib-bin, OpenCV 4.x).

It lives in its own process because those libraries are not in the project's environment (OpenCV 5 no longer
ships the Haar cascades nor `CascadeClassifier`). Protocol on stdin/stdout, one request at a time:
  request:  a JSON line {"cmd": "detect", "det": "hog"|"haar", "h": H, "w": W, "adjust": T} then H*W*3 raw
            BGR bytes (T: dlib's adjust_threshold, HOG only);
            or {"cmd": "threads", "n": N} (0 = the library default) or {"cmd": "quit"}.
  reply:    a JSON line {"boxes": [[x1, y1, x2, y2], ...], "scores": [...], "ms": wall ms, "cpu_ms": CPU ms}.
Only the detector call (and its own colour conversion) is timed, not the transfer; CPU time is the process's
(all its threads), which on a loaded machine is a steadier measure of cost than wall time.

Settings: HOG = `dlib.get_frontal_face_detector()` run with upsample 1 and the requested `adjust_threshold` (the
caller asks for -0.5 when it wants scores below dlib's operating point 0 for AP, and thresholds at 0). Haar =
`haarcascade_frontalface_default.xml`, `detectMultiScale` with OpenCV's defaults (scale 1.1, 3 neighbours, minimum
size = the cascade's 24x24 window) on the grey image; it has no score (1.0 is returned).
"""

from __future__ import annotations

import json
import os
import sys
import time

import cv2
import dlib
import numpy as np


def main() -> int:
    hog = dlib.get_frontal_face_detector()
    cascade_path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
    haar = cv2.CascadeClassifier(cascade_path)
    if haar.empty():
        sys.stderr.write(f"cannot load {cascade_path}\n")
        return 1
    default_threads = cv2.getNumThreads()
    inp, out = sys.stdin.buffer, sys.stdout
    out.write(json.dumps({"ready": True, "opencv": cv2.__version__, "dlib": dlib.__version__,
                          "cascade": os.path.basename(cascade_path)}) + "\n")
    out.flush()
    while True:
        line = inp.readline()
        if not line:
            return 0
        req = json.loads(line)
        if req["cmd"] == "quit":
            return 0
        if req["cmd"] == "threads":
            cv2.setNumThreads(int(req["n"]) or default_threads)
            out.write(json.dumps({"threads": cv2.getNumThreads()}) + "\n")
            out.flush()
            continue
        h, w = int(req["h"]), int(req["w"])
        img = np.frombuffer(inp.read(h * w * 3), np.uint8).reshape(h, w, 3)
        if req["det"] == "hog":
            t, c = time.perf_counter(), time.process_time()
            rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            rects, scores, _ = hog.run(rgb, 1, float(req.get("adjust", 0.0)))
            ms, cpu_ms = 1000 * (time.perf_counter() - t), 1000 * (time.process_time() - c)
            boxes = [[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects]
            sc = [float(s) for s in scores]
        else:
            t, c = time.perf_counter(), time.process_time()
            gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            found = haar.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=3)
            ms, cpu_ms = 1000 * (time.perf_counter() - t), 1000 * (time.process_time() - c)
            boxes = [[int(x), int(y), int(x + bw), int(y + bh)] for x, y, bw, bh in found]
            sc = [1.0] * len(boxes)
        out.write(json.dumps({"boxes": boxes, "scores": sc, "ms": ms, "cpu_ms": cpu_ms}) + "\n")
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
