"""`vlmbench fit-palette TASK -o FILE`: learn each colour answer's RGB from a task's images."""

from collections import defaultdict
from pathlib import Path

import click
import numpy as np

from vlmbench.api import ImageProblem, decode_image, resolve_task, write_json


@click.command("fit-palette")
@click.argument("task")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where the palette (colour name -> RGB, JSON) is written.")  # fmt: skip
def fit_palette(task, output):
    """Learn the mean RGB of every colour answer of TASK's training images (its samples without a train
    split); `vlmbench run -m dominant-color -a palette=FILE` then answers with those colours."""
    loaded = resolve_task(task)
    pixels = defaultdict(list)
    for sample in loaded.train_samples or loaded.samples:
        if "colo" in sample.question.lower():
            try:
                image = decode_image(loaded.image_source.read(sample.image), name=sample.image)
            except ImageProblem:
                continue  # an unreadable image teaches nothing
            pixels[sample.answers[0].lower()].append(
                np.asarray(image.resize((16, 16)), dtype=np.float32).mean((0, 1))
            )
    palette = {name: [round(float(v)) for v in np.mean(rgb, axis=0)] for name, rgb in sorted(pixels.items())}
    write_json(output, palette)
    click.echo(f"{len(palette)} colours from {sum(map(len, pixels.values()))} images -> {output}")
