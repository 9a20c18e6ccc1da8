"""BERTScore (Zhang et al. 2020) precision, recall and F1, computed by the ``bert-score`` package.

Defaults for English: ``roberta-large``, layer 17, no idf, baseline rescaling on —
``x' = (x - b) / (1 - b)`` with b from bert-score's ``rescale_baseline/en/roberta-large.tsv``
(layer 17: P 0.83150584, R 0.8314941, F 0.83122575). The model is found offline-first (local folder,
Hugging Face cache, download) and handed to bert-score as a folder; the layer count and the baseline are
looked up under the model's *name*, so they stay right however the files were found.

``bert_score.score()`` silently returns unrescaled values when it has no baseline for a model; here a
missing baseline with ``rescale=true`` is an error (the metric is reported as skipped): give
``baseline_path=FILE`` or set ``rescale=false``. Any Hugging Face encoder works with
``model=<folder>, num_layers=N``.

As in bert-score, an empty prediction or reference gets raw scores of 0 (about -4.9 after rescaling with
the roberta-large baseline). With ``idf=true`` the idf weights are computed over the distinct references of
the scored set (bert-score's ``idf_sents``); with a single reference every word would get weight zero.

Compatibility: bert-score encodes RoBERTa/GPT-2 inputs with ``add_prefix_space=True`` per call, which
transformers 5 ignores; the tokenizer is therefore loaded with ``add_prefix_space=True`` so the words are
tokenised as bert-score intends (``" red"``, not ``"red"``). Empty strings are scored here (bert-score's
own path for them fails with transformers 5). Plain bert-score does not reproduce these values, so the
recorded hash string carries a suffix naming the repairs: ``...-rescaled+vlmbench(add_prefix_space,empty)``.

Scale: every distinct (prediction, reference) pair is scored in one bert-score call, which encodes each
distinct string once (bert-score deduplicates within a call only); their token embeddings are held in
memory for that call.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from vlmbench.api import (
    Arg,
    ArgError,
    AssetMissingError,
    SampleMetric,
    file_sha256,
    library_bars_off,
)
from vlmbench_plugins.metrics.memo import ProcessMemo, encoder_identity

_scorers: ProcessMemo[tuple[Any, tuple[str, ...]]] = ProcessMemo()

#: What vlmbench does that plain bert-score (with transformers 5) does not, by the name used in the hash.
REPAIRS = {
    "add_prefix_space": "RoBERTa/GPT-2 tokenizer loaded with add_prefix_space=True, which bert-score asks "
    "for per call and transformers 5 ignores",
    "empty": "pairs with an empty side scored raw 0 by vlmbench; bert-score's own path for them fails "
    "with transformers 5",
}


def _table_name(model: str, known: dict[str, int]) -> str | None:
    """The name bert-score's tables use for ``model`` (``FacebookAI/roberta-large`` -> ``roberta-large``)."""
    if model in known:
        return model
    short = model.rstrip("/").split("/")[-1]
    return short if short in known and not os.path.isdir(model) else None


def baseline_file(name: str, lang: str) -> str | None:
    """bert-score's packaged rescale baseline for model ``name`` in ``lang``, if there is one."""
    import bert_score

    path = os.path.join(os.path.dirname(bert_score.__file__), "rescale_baseline", lang, f"{name}.tsv")
    return path if os.path.isfile(path) else None


class BertScore(SampleMetric):
    # Every unique pair in one call: bert-score encodes each distinct string of a call once (and idf
    # weights must come from all references at once).
    batch_size = 1 << 62
    args = {
        "model": Arg(str, "roberta-large", "Hub id or local folder of the encoder"),
        "num_layers": Arg(int, None, "layer whose embeddings are matched (default: bert-score's table)"),
        "idf": Arg(bool, False, "idf-weight tokens (weights from the distinct references scored)"),
        "rescale": Arg(bool, True, "rescale with bert-score's baseline: (x - b) / (1 - b)"),
        "baseline_path": Arg(str, None, "a baseline file (CSV: LAYER,P,R,F) instead of bert-score's"),
        "lang": Arg(str, "en", "language of the baseline"),
        "batch_size": Arg(int, 64, "sentences per encoder batch"),
        "device": Arg(str, None, "cpu, cuda, ... (default: the run's device)"),
        "use_fast_tokenizer": Arg(bool, False, "bert-score's use_fast_tokenizer"),
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._scorer: Any = None
        self._resolved: Any = None
        self._layers: int | None = None
        self._baseline: str | None = None
        self._hash: str | None = None
        self._plain_hash: str | None = None
        self._repairs: tuple[str, ...] = ()

    def _device(self) -> str:
        return self.options["device"] or self.context.device or "cpu"

    def setup(self) -> None:
        if self._scorer is not None:
            return
        from vlmbench.api import resolve_model

        # The model first: a path lookup, where bert-score's tables below cost its import (seconds).
        self._resolved = resolve_model(self.options["model"], purpose="BERTScore")
        from bert_score.utils import get_hash, model2layers

        o = self.options
        name = _table_name(o["model"], model2layers)
        layers = (
            o["num_layers"] if o["num_layers"] is not None else (model2layers.get(name) if name else None)
        )
        if layers is None:
            raise ArgError(
                f"metric {self.name!r}: bert-score has no default layer for {o['model']!r}; give num_layers=N"
            )
        baseline = None
        if o["rescale"]:
            baseline = o["baseline_path"] or (baseline_file(name, o["lang"]) if name else None)
            if baseline is None or not os.path.isfile(baseline):
                raise AssetMissingError(
                    f"BERTScore rescale baseline for {o['model']!r} (lang {o['lang']!r})",
                    "bert-score ships baselines only for the models it knows, and would silently return "
                    "unrescaled scores; give baseline_path=FILE (CSV rows LAYER,P,R,F) or set rescale=false",
                )
        self._layers, self._baseline = layers, baseline
        plain_hash = get_hash(
            name or o["model"],
            layers,
            o["idf"],
            o["rescale"],
            o["baseline_path"] is not None,
            o["use_fast_tokenizer"],
        )
        key = (
            str(self._resolved.path),
            layers,
            o["idf"],
            o["lang"],
            baseline,
            self._device(),
            o["use_fast_tokenizer"],
        )
        self._scorer, self._repairs = _scorers.get(
            key, lambda: _make_scorer(str(self._resolved.path), layers, o, baseline, self._device())
        )
        self._hash = f"{plain_hash}+vlmbench({','.join(self._repairs)})"
        self._plain_hash = plain_hash

    def cache_identity(self) -> dict[str, Any]:
        """The encoder's files, a baseline file given by path (bert-score's own tables and baselines are
        those of its version), the device and the libraries."""
        given = self.options["baseline_path"]
        libraries = ("bert-score", "transformers", "tokenizers", "torch", "numpy")
        baseline = file_sha256(given) if given and os.path.isfile(given) else None
        return encoder_identity(self, "BERTScore", self._device(), libraries, baseline_file=baseline)

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
        import torch

        if self._scorer is None:
            self.setup()
        o = self.options
        n = len(predictions)
        raw = np.zeros((n, 3), dtype=np.float32)  # empty on either side: raw 0, as bert-score does
        keep = [i for i in range(n) if predictions[i].strip() and references[i].strip()]
        if keep:
            cands = [predictions[i] for i in keep]
            refs = [references[i] for i in keep]
            if o["idf"]:
                self._scorer.compute_idf(list(dict.fromkeys(references)))
            with torch.inference_mode():
                p, r, f = self._scorer.score(cands, refs, batch_size=o["batch_size"])
            raw[keep, 0], raw[keep, 1], raw[keep, 2] = p.numpy(), r.numpy(), f.numpy()
        if o["rescale"]:
            # float32, exactly as bert-score rescales its own tensors
            b = self._scorer.baseline_vals.numpy().astype(np.float32)
            raw = (raw - b) / (np.float32(1) - b)
        return {
            "bertscore_precision": raw[:, 0].astype(np.float64).tolist(),
            "bertscore_recall": raw[:, 1].astype(np.float64).tolist(),
            "bertscore_f1": raw[:, 2].astype(np.float64).tolist(),
        }

    def describe(self) -> dict:
        from importlib.metadata import version

        o = self.options
        return {
            **super().describe(),
            "definition": "BERTScore greedy-matching P/R/F1 (bert-score package)"
            + (", baseline-rescaled (x - b) / (1 - b)" if o["rescale"] else ", not rescaled"),
            "model": self._resolved.describe() if self._resolved else None,
            "num_layers": self._layers,
            "idf": o["idf"],
            "rescale": o["rescale"],
            "baseline": self._baseline,
            "baseline_values": (
                self._scorer.baseline_vals.tolist() if self._scorer is not None and o["rescale"] else None
            ),
            # Not plain bert-score's hash: the suffix names the repairs, so nobody expects plain
            # bert-score to reproduce these values; its own string is kept beside it.
            "hash": self._hash,
            "bert_score_hash": self._plain_hash,
            "repairs": {name: REPAIRS[name] for name in self._repairs},
            "bert_score": version("bert-score"),
            "device": self._device(),
        }


def _make_scorer(
    path: str, layers: int, o: dict, baseline: str | None, device: str
) -> tuple[Any, tuple[str, ...]]:
    """A bert-score scorer for the model at ``path``, and the names of the repairs (:data:`REPAIRS`)
    it runs with."""
    from bert_score import BERTScorer

    with library_bars_off():  # scoring shows its own progress line
        scorer = BERTScorer(
            model_type=path,
            num_layers=layers,
            batch_size=o["batch_size"],
            idf=o["idf"],  # the weights themselves are computed per call (compute_idf); see score()
            device=device,
            lang=o["lang"],
            rescale_with_baseline=False,  # rescaled here, so empty answers are rescaled too
            baseline_path=baseline,
            use_fast_tokenizer=o["use_fast_tokenizer"],
        )
    prefix = _restore_prefix_space(scorer, path, o["use_fast_tokenizer"])
    return scorer, (("add_prefix_space",) if prefix else ()) + ("empty",)


def _restore_prefix_space(scorer: Any, path: str, use_fast: bool) -> bool:
    """Reload a RoBERTa/GPT-2 tokenizer with ``add_prefix_space=True``; whether that was needed."""
    from transformers import AutoTokenizer, GPT2Tokenizer, RobertaTokenizer

    tok = scorer._tokenizer  # bert-score keeps its tokenizer in this attribute and reads it from there
    if isinstance(tok, (GPT2Tokenizer, RobertaTokenizer)) and not getattr(tok, "add_prefix_space", False):
        scorer._tokenizer = AutoTokenizer.from_pretrained(path, use_fast=use_fast, add_prefix_space=True)
        return True
    return False
