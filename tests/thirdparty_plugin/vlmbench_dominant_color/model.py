"""A weight-free model that looks at the image: the name of its most common colour."""

import json
from pathlib import Path

import numpy as np

from vlmbench.api import Arg, Model, file_sha256

PALETTE = {"black": [20, 20, 20], "white": [245, 245, 245], "gray": [128, 128, 128], "red": [200, 30, 30],
           "yellow": [240, 220, 40], "green": [40, 150, 60], "blue": [40, 80, 200], "brown": [120, 75, 40]}  # fmt: skip


class DominantColor(Model):
    args = {
        "ignore_white": Arg(bool, True, "ignore near-white pixels (catalogue backgrounds)"),
        "size": Arg(int, 64, "shrink images to size x size before counting", min=4),
        "palette": Arg(str, None, "JSON file of colour name -> RGB, e.g. written by `vlmbench fit-palette`"),
    }

    def load(self):  # before the DataLoader starts: its workers inherit the palette
        path = self.arg_values["palette"]
        palette = json.loads(Path(path).read_text()) if path else PALETTE
        self.names, self.rgb = list(palette), np.array(list(palette.values()), dtype=np.float32)

    def identity(self):  # the palette's content decides the answers, not its file name
        path = self.arg_values["palette"]
        return {**super().identity(), "palette_sha256": file_sha256(path) if path else None}

    def collate(self, requests):  # runs in DataLoader worker processes: per-image work goes here
        return [self.colour(r.image) for r in requests]

    def colour(self, image) -> str:
        size = self.arg_values["size"]
        pixels = np.asarray(image.resize((size, size)), dtype=np.float32).reshape(-1, 3)
        nearest = ((pixels[:, None] - self.rgb[None]) ** 2).sum(-1).argmin(1)
        counts = np.bincount(nearest, minlength=len(self.names))
        if (
            self.arg_values["ignore_white"]
            and "white" in self.names
            and (nearest != self.names.index("white")).any()
        ):
            counts[self.names.index("white")] = 0  # unless the image is all white
        return self.names[int(counts.argmax())]

    def generate(self, batch, generation):
        return batch.inputs

    def rank(self, batch):
        return [
            [float(c.lower() == colour) for c in r.candidates]
            for r, colour in zip(batch.requests, batch.inputs, strict=True)
        ]
