"""A weight-free model that looks at the image: the name of its most common colour."""

import numpy as np

from vlmbench.args import Arg
from vlmbench.model import Model

PALETTE = {
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "red": (200, 30, 30),
    "orange": (240, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 150, 60),
    "blue": (40, 80, 200),
    "purple": (130, 50, 160),
    "pink": (240, 150, 180),
    "brown": (120, 75, 40),
    "beige": (225, 205, 170),
}
NAMES = list(PALETTE)
COLOURS = np.array(list(PALETTE.values()), dtype=np.float32)


class DominantColor(Model):
    args = {
        "ignore_white": Arg(bool, True, "ignore near-white pixels (catalogue backgrounds)"),
        "size": Arg(int, 64, "shrink images to size x size before counting"),
    }

    def collate(self, requests):
        # Runs in DataLoader worker processes: do the per-image work here.
        return [self._colour(r.image) for r in requests]

    def _colour(self, image) -> str:
        size = self.arg_values["size"]
        pixels = np.asarray(image.resize((size, size)), dtype=np.float32).reshape(-1, 3)
        nearest = ((pixels[:, None, :] - COLOURS[None]) ** 2).sum(-1).argmin(1)
        counts = np.bincount(nearest, minlength=len(NAMES))
        if self.arg_values["ignore_white"] and counts.sum() > counts[NAMES.index("white")]:
            counts[NAMES.index("white")] = 0
        return NAMES[int(counts.argmax())]

    def generate(self, batch, generation):
        return batch.inputs

    def rank(self, batch):
        return [
            [1.0 if c.lower() == colour else 0.0 for c in request.candidates]
            for request, colour in zip(batch.requests, batch.inputs, strict=True)
        ]

    def describe(self):
        return {**super().describe(), "parameters": 0}
