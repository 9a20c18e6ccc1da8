"""Seconds per image of ViLBERT's region detector at the released size (ResNeXt-152 32x8d FPN, 800 px).

Builds the detector at the released X-152 config with random weights (the real ``detectron_model.pth``
is not needed to time it: the work is the same), then extracts the regions of ``--images`` images of
the bundled sample task, one at a time as a run does, and reports per stage (preprocessing, backbone
and FPN, RPN, box head, per-class NMS) and in total. The first image is a warm-up unless ``--images``
is 1.

    python benchmarks/vilbert_detector.py                       # CPU, 2 images
    python benchmarks/vilbert_detector.py --device cuda --images 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from vlmbench_plugins.models.vilbert.detector.box_head import pool
from vlmbench_plugins.models.vilbert.detector.config import DetectorConfig
from vlmbench_plugins.models.vilbert.detector.extraction import select_regions
from vlmbench_plugins.models.vilbert.detector.model import RegionDetector
from vlmbench_plugins.models.vilbert.detector.preprocess import pad_batch, prepare_image
from vlmbench_plugins.models.vilbert.detector.rpn import image_proposals, level_proposals

IMAGES = Path(__file__).resolve().parents[1] / "tasks" / "abo_sample" / "images"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def time_image(model: RegionDetector, image: Image.Image, device: str) -> dict[str, float]:
    """One image through every stage, with the time of each."""
    times: dict[str, float] = {}
    start = time.perf_counter()
    prepared = prepare_image(image)
    batch, padded = pad_batch([prepared.pixels])
    batch = batch.to(device)
    _sync(device)
    times["preprocess"] = time.perf_counter() - (mark := start)
    mark = time.perf_counter()
    _, body = model.backbone.body(batch)
    features = model.backbone.fpn(body)
    _sync(device)
    times["backbone+fpn"] = time.perf_counter() - mark
    mark = time.perf_counter()
    logits, deltas = model.rpn.head(features)
    anchors = [model.rpn.anchor_generator.grid_anchors(i, *f.shape[-2:]) for i, f in enumerate(features)]
    per_level = [
        level_proposals(model.config, logits[i][0], deltas[i][0], anchors[i], padded) for i in range(5)
    ]
    proposals, _ = image_proposals(model.config, per_level)
    _sync(device)
    times["rpn"] = time.perf_counter() - mark
    mark = time.perf_counter()
    pooled, _ = pool(features[:4], [proposals], model.config)
    fc6, fc7 = model.roi_heads.box.feature_extractor(pooled)
    class_logits, _ = model.roi_heads.box.predictor(fc7)
    _sync(device)
    times["box head"] = time.perf_counter() - mark
    mark = time.perf_counter()
    found = select_regions(proposals, class_logits, fc6, prepared.scale, prepared.image_size)
    _ = found.features.cpu()
    _sync(device)
    times["per-class nms"] = time.perf_counter() - mark
    times["total"] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = RegionDetector(DetectorConfig.release()).to(args.device).eval()
    print(f"built the X-152 detector ({sum(p.numel() for p in model.parameters()):,} parameters) "
          f"in {time.perf_counter() - started:.1f} s on {args.device}, {torch.get_num_threads()} CPU threads")  # fmt: skip
    paths = sorted(IMAGES.rglob("*.jpg"))[: args.images]
    runs = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        times = time_image(model, image, args.device)
        runs.append(times)
        print(
            f"{path.name} {image.size[0]}x{image.size[1]}: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
        )
    measured = runs[1:] if len(runs) > 1 else runs
    print(
        f"seconds per image (median of {len(measured)}): {statistics.median(r['total'] for r in measured):.2f}"
    )
    if args.device.startswith("cuda"):
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
