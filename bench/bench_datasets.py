"""Benchmarks for dataset import and the input pipeline; prints the figures.

1. Importing a zip of 1,000 JPEGs (seconds, images/s).
2. Peak RSS growth while iterating the pipeline over 2,000 and over 20,000 images, each in
   a fresh subprocess, measured from after the dataset is built: streaming means the two
   must be within 20% of each other. The item table built first (paths and labels as
   tensors, O(n) by nature, ~0.1 KB per image) is printed separately.
3. Decode + resize throughput of the pipeline (Pillow, the one loader) next to a raw
   ``tf.io.decode_image`` + ``tf.image.resize`` pipeline over the same files, on real photos
   from ``$TLS_FLOWERS_DIR`` (default ``../shared/datasets/flowers5``; only read) when
   present, and on generated JPEGs.

Usage: ``.venv/bin/python bench/bench_datasets.py`` (about a minute on 2 cores). Exits with
status 1 if the memory check fails. Everything it writes goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402 - after the path and TF log setup above
from PIL import Image  # noqa: E402

from tlcore.data import demo_data  # noqa: E402

IMPORT_IMAGES = 1_000
IMPORT_SIDE = 256
MEMORY_COUNTS = (2_000, 20_000)
MEMORY_SIDE = 64
MEMORY_IMAGE_SIZE = 224  # batches in flight are ~100 MB: allocator noise is small beside it
MEMORY_TOLERANCE = 0.20
MEMORY_REPEATS = 3  # tf.data's autotuner sizes buffers differently from run to run: median
THROUGHPUT_SIZE = 224
BATCH_SIZE = 32
SAMPLE_SECONDS = 0.005
DEFAULT_FLOWERS = REPO_ROOT.parent / "shared" / "datasets" / "flowers5"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)  # internal: one measurement
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(measure_pipeline_memory(Path(args.memory_child))))
        return 0
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        tmp_dir = Path(tmp)
        started = time.perf_counter()
        bench_import(tmp_dir)
        memory_ok = bench_memory(tmp_dir)
        bench_throughput(tmp_dir)
        print(f"\nTotal benchmark time: {time.perf_counter() - started:.0f} s")
    return 0 if memory_ok else 1


# --- 1. import ---------------------------------------------------------------------------


def write_demo_jpegs(folder: Path, count: int, side: int) -> list[Path]:
    """``count`` distinct JPEGs in class folders: demo shapes enlarged to ``side`` px."""
    paths = []
    classes = demo_data.DEMO_CLASSES
    for index in range(count):
        class_name = classes[index % len(classes)]
        image = demo_data.generate_demo_image(class_name, index // len(classes))
        path = folder / class_name / f"{class_name}_{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.resize((side, side), Image.Resampling.BILINEAR).save(path, quality=90)
        paths.append(path)
    return paths


def bench_import(tmp_dir: Path) -> None:
    from tlcore.data import datasets
    from tlcore.store.workspace import open_workspace

    print(f"== Import: zip of {IMPORT_IMAGES:,} JPEGs ({IMPORT_SIDE}x{IMPORT_SIDE} px)")
    source = tmp_dir / "import-src"
    write_demo_jpegs(source / "shapes", IMPORT_IMAGES, IMPORT_SIDE)
    zip_path = tmp_dir / "shapes.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(source.rglob("*.jpg")):
            archive.write(path, path.relative_to(source).as_posix())
    ws = open_workspace(tmp_dir / "workspace")
    started = time.perf_counter()
    ds = datasets.import_zip(ws, zip_path)
    seconds = time.perf_counter() - started
    size_mb = zip_path.stat().st_size / 1024**2
    print(f"   zip size           {size_mb:8.1f} MB")
    print(f"   import time        {seconds:8.2f} s  ({ds.num_images / seconds:,.0f} images/s)")
    print(f"   splits             {ds.split_sizes()}")
    started = time.perf_counter()
    again = datasets.import_zip(ws, zip_path)
    print(
        f"   re-import (exists) {time.perf_counter() - started:8.2f} s  "
        f"already_existed={again.already_existed}"
    )


# --- 2. memory ---------------------------------------------------------------------------


def bench_memory(tmp_dir: Path) -> bool:
    print(
        f"\n== Memory: iterate the pipeline once ({MEMORY_IMAGE_SIZE} px, batch {BATCH_SIZE}, "
        "shuffled), fresh process each"
    )
    distinct = write_demo_jpegs(tmp_dir / "memory-distinct", 200, MEMORY_SIDE)
    folder = tmp_dir / "memory"
    folder.mkdir()
    for index in range(max(MEMORY_COUNTS)):  # copies of 200 distinct files: quick to write
        shutil.copyfile(distinct[index % len(distinct)], folder / f"{index:06d}.jpg")
    all_paths = sorted(str(p) for p in folder.iterdir())
    growth = {}
    for count in MEMORY_COUNTS:
        list_file = tmp_dir / f"paths-{count}.json"
        list_file.write_text(json.dumps(all_paths[:count]))
        runs = [run_memory_child(list_file) for _ in range(MEMORY_REPEATS)]
        growth[count] = float(np.median([r["growth_mb"] for r in runs]))
        each = ", ".join(f"{r['growth_mb']:.0f}" for r in runs)
        print(
            f"   {count:>6,} images: peak RSS growth while iterating {growth[count]:6.1f} MB"
            f" (median of {each} MB; item table {runs[0]['table_mb']:.1f} MB; process "
            f"{runs[0]['baseline_mb']:.0f} MB; {runs[0]['images_per_s']:,.0f} images/s)"
        )
    small, large = (growth[c] for c in MEMORY_COUNTS)
    ratio = large / max(small, 1e-6)
    ok = abs(ratio - 1) <= MEMORY_TOLERANCE
    all_in_memory_mb = max(MEMORY_COUNTS) * MEMORY_IMAGE_SIZE**2 * 3 * 4 / 1024**2
    print(
        f"   ratio {max(MEMORY_COUNTS):,} / {min(MEMORY_COUNTS):,}: {ratio:.2f} "
        f"({'OK' if ok else 'FAIL'}: must be within {MEMORY_TOLERANCE:.0%}); holding all "
        f"{max(MEMORY_COUNTS):,} decoded images would take {all_in_memory_mb:,.0f} MB"
    )
    return ok


def run_memory_child(list_file: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(list_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_pipeline_memory(list_file: Path) -> dict:
    """Runs in a subprocess: peak RSS growth over one pass of the pipeline."""
    import psutil

    from tlcore.data import pipeline

    paths = json.loads(list_file.read_text())
    items = [(p, i % 5) for i, p in enumerate(paths)]
    process = psutil.Process()
    warm_up = pipeline.make_image_dataset(
        items[:256], image_size=MEMORY_IMAGE_SIZE, batch_size=BATCH_SIZE, shuffle=True, seed=0
    )
    for _ in warm_up:  # starts TensorFlow's thread pools, so they are not counted as growth
        pass
    before_build = process.memory_info().rss
    dataset = pipeline.make_image_dataset(
        items, image_size=MEMORY_IMAGE_SIZE, batch_size=BATCH_SIZE, shuffle=True, seed=0
    )
    baseline = process.memory_info().rss  # the item table (paths, labels) is O(n) by nature
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    seen = sum(int(batch.shape[0]) for batch, _ in dataset)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    assert seen == len(items)
    return {
        "images": seen,
        "baseline_mb": baseline / 1024**2,
        "table_mb": (baseline - before_build) / 1024**2,
        "growth_mb": (peak[0] - baseline) / 1024**2,
        "images_per_s": seen / seconds,
    }


# --- 3. throughput -----------------------------------------------------------------------


def bench_throughput(tmp_dir: Path) -> None:
    flowers = Path(os.environ.get("TLS_FLOWERS_DIR", DEFAULT_FLOWERS))
    photos = sorted(str(p) for p in flowers.rglob("*.jpg")) if flowers.is_dir() else []
    generated = sorted(str(p) for p in (tmp_dir / "import-src").rglob("*.jpg"))[:600]
    print(f"\n== Throughput: decode + resize to {THROUGHPUT_SIZE} px, batch {BATCH_SIZE}")
    if photos:
        report_throughput(f"flowers5 photos ({len(photos)}, {flowers})", photos)
    else:
        print(f"   (no photos at {flowers}; set TLS_FLOWERS_DIR to include real photos)")
    report_throughput(f"generated JPEGs ({len(generated)}, {IMPORT_SIDE} px)", generated)


def report_throughput(title: str, paths: list[str]) -> None:
    print(f"   {title}")
    for label, build in (
        ("tlcore.data.pipeline (Pillow)", build_tlcore_pipeline),
        ("raw tf.io.decode_image", build_raw_tf_pipeline),
    ):
        rates = [images_per_second(build(paths)) for _ in range(3)]  # first pass warms caches
        print(f"     {label:26s} {max(rates[1:]):7,.0f} images/s")


def build_tlcore_pipeline(paths: list[str]):
    from tlcore.data import pipeline

    items = [(p, 0) for p in paths]
    return pipeline.make_image_dataset(
        items, image_size=THROUGHPUT_SIZE, batch_size=BATCH_SIZE, shuffle=False, seed=0
    )


def build_raw_tf_pipeline(paths: list[str]):
    import tensorflow as tf

    def decode(path):
        pixels = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        pixels = tf.image.resize(pixels, (THROUGHPUT_SIZE, THROUGHPUT_SIZE), antialias=True)
        return pixels, 0

    dataset = tf.data.Dataset.from_tensor_slices(paths)
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE)


def images_per_second(dataset) -> float:
    started = time.perf_counter()
    count = sum(int(np.shape(batch)[0]) for batch, _ in dataset)
    return count / (time.perf_counter() - started)


if __name__ == "__main__":
    sys.exit(main())
