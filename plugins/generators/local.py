"""``local``: a vlmbench model plugin that can generate, used as the question writer.

Curation without an API: any registered model with ``generate`` requests (e.g. Qwen2.5-VL) gets the
same prompt as the ``gemini`` generator, with the product image, through the model's own
``collate``/``generate`` path (so dtype, device, quantisation and adapters work as in ``vlmbench run``).
Small models rarely follow a JSON schema without constrained decoding, so by default the study's
delimited line format is asked for; replies are parsed tolerantly either way.

Options: ``model`` (a model plugin name), ``model_args`` (its ``--model-args``, with ``;`` between
pairs because ``,`` separates the generator's own options), ``device``, ``dtype``, ``batch_size``,
``max_new_tokens``, ``questions``, ``prompt`` (``study``: the paper's prompt and its CSV rows),
``prompt_file``, ``output_format``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from vlmbench.api import (
    Arg,
    Batch,
    GenerationResult,
    GenerationSpec,
    Generator,
    ImageProblem,
    Job,
    Model,
    Request,
    VlmbenchError,
    decode_image,
    items_from_reply,
)
from vlmbench_plugins.generators.prompting import (
    COLUMNS,
    OUTPUT_FORMATS,
    PROMPT_ARGS,
    prompt_identity,
    reply_format,
    template_for,
)


class LocalGenerator(Generator):
    args = {
        "model": Arg(str, None, "name of a vlmbench model plugin that supports generate requests"),
        "model_args": Arg(str, "", "the model's arguments as k=v;k=v"),
        "questions": Arg(int, 5, "questions asked for per listing"),
        **PROMPT_ARGS,
        "output_format": Arg(
            str, "delimited", "reply format asked for (default prompt only)", choices=tuple(OUTPUT_FORMATS)
        ),
        "max_new_tokens": Arg(int, 256, "longest reply in tokens"),
        "dtype": Arg(str, "auto", "auto, float32, bfloat16, float16"),
        "device": Arg(str, "auto", "auto, cpu, cuda, cuda:1, ...", affects_output=False),
        "batch_size": Arg(int, 4, "listings per model call", affects_output=False),
    }
    version = "1"

    def __init__(self, entry, args):
        super().__init__(entry, args)
        if not args["model"]:
            raise VlmbenchError(
                "generator 'local' needs model=<name of a model plugin that can generate>; see `vlmbench list models`"
            )
        if args["batch_size"] < 1 or args["questions"] < 1 or args["max_new_tokens"] < 1:
            raise VlmbenchError(
                "generator 'local': batch_size, questions and max_new_tokens must be at least 1"
            )
        self.template = template_for(args)
        self._model: Model | None = None
        self._loaded = False
        self._totals = {"model_calls": 0, "listings": 0, "unreadable_images": 0}

    def _instance(self) -> Model:
        """The model object (weights not loaded yet), created once."""
        if self._model is None:
            from vlmbench.api import load_plugins, resolve_device

            plugins = load_plugins()
            entry = plugins.models.get(self.arg_values["model"])
            if "generate" not in entry.request_types:
                raise VlmbenchError(
                    f"model {entry.name!r} cannot generate text, so it cannot write questions"
                )
            if plugins.models.load(entry.name).needs_training_data:
                raise VlmbenchError(f"model {entry.name!r} needs training data, so it cannot write questions")
            self._model = plugins.create_model(
                entry.name,
                self.arg_values["model_args"].replace(";", ","),
                device=resolve_device(self.arg_values["device"]),
                dtype=self.arg_values["dtype"],
            )
        return self._model

    def identity(self) -> dict[str, Any]:
        ident = prompt_identity(super().identity(), self.arg_values, self.template, "output_format")
        ident["model_identity"] = self._instance().identity()
        return ident

    def setup(self) -> None:
        model = self._instance()
        if not self._loaded:
            model.load()
            self._loaded = True

    def generate(self, job: Job) -> GenerationResult:
        return next(iter(self.generate_many([job])))

    def generate_many(self, jobs: Iterable[Job]) -> Iterator[GenerationResult]:
        batch: list[Job] = []
        for job in jobs:
            batch.append(job)
            if len(batch) == self.arg_values["batch_size"]:
                yield from self._run(batch)
                batch = []
        if batch:
            yield from self._run(batch)

    def _run(self, jobs: list[Job]) -> list[GenerationResult]:
        model = self._instance()
        a = self.arg_values
        results: dict[str, GenerationResult] = {}
        requests: list[Request] = []
        mode = reply_format(a, a["output_format"])
        for job in jobs:
            listing = job.listing
            prompt = self.template.render(listing, a["questions"], mode)
            try:
                image = decode_image(job.image(), name=job.image_ref or listing.key)
            except ImageProblem as exc:
                # A broken image will not get better on a re-run: record the listing as done, empty.
                self._totals["unreadable_images"] += 1
                results[listing.key] = GenerationResult(key=listing.key, rejected={f"image_{exc.reason}": 1})
                continue
            requests.append(
                Request(
                    sample_id=listing.key, kind="generate", prompt=prompt, question=prompt,
                    image_ref=job.image_ref or listing.key, image_id=job.image_id or listing.key, image=image,
                )
            )  # fmt: skip
        if requests:
            batch = Batch(requests, model.collate(requests))
            outputs = model.generate(batch, GenerationSpec(max_new_tokens=a["max_new_tokens"]))
            if len(outputs) != len(requests):
                raise VlmbenchError(
                    f"model {model.name!r} returned {len(outputs)} outputs for {len(requests)} requests"
                )
            self._totals["model_calls"] += 1
            for request, text in zip(requests, outputs, strict=True):
                items, rejected = items_from_reply(text, self.name, source=model.name, columns=COLUMNS[mode])
                results[request.sample_id] = GenerationResult(
                    key=request.sample_id,
                    items=items,
                    rejected=rejected,
                    raw=text[:2000] if not items or rejected else None,
                )
        self._totals["listings"] += len(jobs)
        return [results[job.listing.key] for job in jobs]

    def usage(self) -> dict[str, Any]:
        return dict(self._totals)
