"""Prediction benchmark (issue 7): single-image latency through the app's predict path
against Keras' own forward pass, measured in the same run, with TFLite beside them.

Usage::

    .venv/bin/python bench/bench_predict.py [--iterations 40] [--backbones MobileNetV2,...]

For each backbone (MobileNetV2 and EfficientNetB0 at 224×224 by default; random weights,
which do not change the speed) the model is saved as a finished run and loaded back the
way the app loads it (`tlcore.serving.predict.Predictor.for_run`, hash checked). Then, one image
at a time, after warm-up:

* ``keras eager``: ``model(x, training=False)``, the raw Keras forward pass;
* ``predict_on_batch``: Keras' compiled predict step;
* ``app predict_arrays``: the Predictor's compiled function (what the page calls);
* ``app predict_images``: the same plus decoding and resizing a JPEG (the whole request);
* ``tflite float``: the TFLite interpreter on the float export.

The ratio app / raw compares ``predict_arrays`` with the faster of the two Keras paths;
the goal is at most 1.2×. Prints a table and writes ``bench/out/predict.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from tlcore.config import RunConfig  # noqa: E402
from tlcore.fileio import atomic_write_json  # noqa: E402
from tlcore.model import model_store, models  # noqa: E402
from tlcore.serving import predict  # noqa: E402
from tlcore.store import runs  # noqa: E402
from tlcore.store.run_layout import CLASSES_FILE  # noqa: E402
from tlcore.store.workspace import open_workspace  # noqa: E402

CLASSES = ["daisy", "dandelion", "rose", "sunflower", "tulip"]
GOAL = 1.2


def _finished_run(ws, backbone: str, size: int) -> str:
    config = RunConfig(
        dataset="bench",
        backbone=backbone,
        weights="none",
        image_size=size,
        flip="none",
        strategy="feature_extraction",
    )
    record = runs.create_run(ws, config)
    model = models.build_model(config, len(CLASSES))
    model_store.save_model(model, record.dir / runs.MODEL_FILE)
    atomic_write_json(record.dir / CLASSES_FILE, {"classes": CLASSES, "dataset_id": "bench"})
    runs.set_state(ws, record.id, runs.RUNNING)
    runs.set_state(ws, record.id, runs.FINISHED)
    return record.id


def _latency(fn, iterations: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p95_ms": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
    }


def _tflite(model, folder: Path):
    saved = folder / "saved_model"
    model.export(str(saved), format="tf_saved_model", verbose=False)
    content = tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=content)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]

    def run(x):
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return run


def bench_backbone(backbone: str, size: int, iterations: int, root: Path) -> dict:
    ws = open_workspace(root / backbone)
    run_id = _finished_run(ws, backbone, size)
    started = time.perf_counter()
    predictor = predict.Predictor.for_run(ws, run_id)
    load_s = time.perf_counter() - started
    model = predictor.model
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    photo = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(photo, "JPEG")
    jpeg = photo.getvalue()

    reference = np.asarray(model(x, training=False))
    np.testing.assert_allclose(predictor.predict_arrays(x), reference, rtol=1e-4, atol=1e-5)
    run_tflite = _tflite(model, root / f"{backbone}-tflite")
    np.testing.assert_allclose(run_tflite(x), reference, rtol=1e-3, atol=1e-4)

    rows = {
        "keras eager": _latency(lambda: model(x, training=False), iterations),
        "predict_on_batch": _latency(lambda: model.predict_on_batch(x), iterations),
        "app predict_arrays": _latency(lambda: predictor.predict_arrays(x), iterations),
        "app predict_images": _latency(
            lambda: predictor.predict_images([("photo.jpg", jpeg)], top_k=3), iterations
        ),
        "tflite float": _latency(lambda: run_tflite(x), iterations),
    }
    raw = min(rows["keras eager"]["p50_ms"], rows["predict_on_batch"]["p50_ms"])
    app = rows["app predict_arrays"]["p50_ms"]
    return {
        "backbone": backbone,
        "image_size": size,
        "load_seconds": round(load_s, 2),
        "latency": rows,
        "ratio_app_to_raw_p50": app / raw,
        "ratio_app_to_eager_p50": app / rows["keras eager"]["p50_ms"],
        "ratio_app_to_predict_on_batch_p50": app / rows["predict_on_batch"]["p50_ms"],
        "ratio_tflite_to_app_p50": rows["tflite float"]["p50_ms"] / app,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--backbones", default="MobileNetV2,EfficientNetB0")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="tls-bench-predict-") as tmp:
        for backbone in args.backbones.split(","):
            results.append(bench_backbone(backbone, args.size, args.iterations, Path(tmp)))
    print(f"\nSingle-image latency, {args.iterations} runs after warm-up (ms, p50 / p95)")
    for result in results:
        print(
            f"\n{result['backbone']} @ {result['image_size']} "
            f"(loaded and hash-checked in {result['load_seconds']} s)"
        )
        for name, row in result["latency"].items():
            print(f"  {name:<20} {row['p50_ms']:8.2f} / {row['p95_ms']:8.2f}")
        ratio = result["ratio_app_to_raw_p50"]
        verdict = "meets" if ratio <= GOAL else "misses"
        print(
            f"  app / raw Keras (faster of eager, predict_on_batch): {ratio:.2f}x "
            f"({verdict} the {GOAL}x goal); app / eager {result['ratio_app_to_eager_p50']:.2f}x; "
            f"app / predict_on_batch {result['ratio_app_to_predict_on_batch_p50']:.2f}x; "
            f"tflite / app {result['ratio_tflite_to_app_p50']:.2f}x"
        )
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "predict.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nTotal {time.perf_counter() - started:.0f} s; written to {out / 'predict.json'}")


if __name__ == "__main__":
    main()
