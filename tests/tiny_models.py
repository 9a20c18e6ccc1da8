"""Tiny, randomly initialised checkpoints of every model family vlmbench ships, built offline.

Each ``build_*`` function writes a complete checkpoint directory (weights, config, tokenizer,
processor and, for chat models, a chat template) with ``save_pretrained`` and returns it, so tests
load it through exactly the code path a real checkpoint takes: ``--model-args pretrained=DIR``.
The models have a few thousand to a couple of million parameters and answer in milliseconds on a
CPU; their answers are random but deterministic (weights are seeded).

Use :func:`build` (or the session fixture ``tiny_checkpoint`` in ``tests/models/conftest.py``)
rather than the builders directly when a test only needs some directory for a family.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

# Words the tiny tokenizers know as whole tokens: enough for questions and answers about products.
_WORD_LIST = (
    "what which how many is are the this product made of colour color shape material room used "
    "for does it have a an in on with yes no one two three four five red green blue yellow black "
    "white gray brown wood metal plastic fabric glass leather square round chair table sofa lamp "
    "bed shoe bag box kitchen bedroom office question answer photo picture image of shown there "
    "item kind type you are helpful assistant with exactly word"
)
WORDS = tuple(_WORD_LIST.split())

CORPUS = [
    "What colour is the product? Red.",
    "What is this product made of? Wood.",
    "Is there a lamp in the photo? Yes.",
    "How many chairs are shown? Two.",
    "Which room is this item used in? Kitchen.",
    "Question: what shape is the box? Answer: square",
    "You are a helpful assistant. Answer with exactly one word.",
    " ".join(WORDS),
    " ".join(w.capitalize() for w in WORDS),
]


def _seed(seed: int = 0) -> None:
    torch.manual_seed(seed)


def _byte_level_bpe(
    special: list[str], vocab_size: int = 420
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE trained on :data:`CORPUS`; ``special`` tokens get the first ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    # tokenizers >= 0.23 wants merges as pairs, not space-joined strings.
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["model"]["merges"]]
    return vocab, merges


def _add_special(tokenizer, tokens: list[str]) -> None:
    """Mark ``tokens`` as special, unsplittable added tokens (else e.g. ``<|image_pad|>`` would be
    split into bytes and the processor would count no image tokens)."""
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in tokens], special_tokens=True)


def _spread(model: torch.nn.Module, std: float = 0.25) -> torch.nn.Module:
    """Redraw matrices with a larger spread than the libraries' initialisers (std 0.02), so that a
    tiny model's answer depends visibly on its image and question instead of being the same token
    sequence for every input."""
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, std)
    return model.eval()


# -- BLIP (VQA) ---------------------------------------------------------------------------------------


def build_blip(out: Path) -> Path:
    """``BlipForQuestionAnswering`` with a word-piece tokenizer and a 32x32 image processor."""
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForQuestionAnswering,
        BlipImageProcessor,
        BlipProcessor,
    )

    _seed(1)
    out.mkdir(parents=True, exist_ok=True)
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789?.,!'")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + sorted(set(WORDS)) + letters + [f"##{c}" for c in letters] + ["[DEC]"]
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)

    ids = {t: i for i, t in enumerate(vocab)}
    config = BlipConfig(
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 32, "patch_size": 8,
        },
        text_config={
            "vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "encoder_hidden_size": 32, "max_position_embeddings": 64,
            "pad_token_id": ids["[PAD]"], "bos_token_id": ids["[DEC]"], "sep_token_id": ids["[SEP]"],
            "eos_token_id": ids["[SEP]"],
        },
        projection_dim=32,
    )  # fmt: skip
    model = _spread(BlipForQuestionAnswering(config))
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# -- BLIP-2 (OPT decoder) --------------------------------------------------------------------------------

BLIP2_QUERY_TOKENS = 4


def build_blip2(out: Path) -> Path:
    """``Blip2ForConditionalGeneration`` with a tiny OPT decoder and a byte-level BPE tokenizer."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
        GPT2Tokenizer,
    )

    _seed(2)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = _byte_level_bpe(["<pad>", "</s>", "<unk>", "<image>"])
    tokenizer = GPT2Tokenizer(
        vocab=vocab, merges=merges, bos_token="</s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    _add_special(tokenizer, ["<image>"])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    processor = Blip2Processor(
        image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=BLIP2_QUERY_TOKENS
    )
    config = Blip2Config(
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 32, "patch_size": 8,
        },
        qformer_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "encoder_hidden_size": 32, "vocab_size": 64, "max_position_embeddings": 64,
        },
        text_config={
            "model_type": "opt", "vocab_size": len(tokenizer), "hidden_size": 32, "ffn_dim": 64,
            "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 128,
            "word_embed_proj_dim": 32, "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        },
        num_query_tokens=BLIP2_QUERY_TOKENS,
        image_token_index=image_token_id,
    )  # fmt: skip
    model = _spread(Blip2ForConditionalGeneration(config))
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# -- Qwen2.5-VL ------------------------------------------------------------------------------------------

# A chat template in the Qwen style: <|im_start|>role\n ... <|im_end|>, images as
# <|vision_start|><|image_pad|><|vision_end|>.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip


# Sizes of the Qwen2.5-VL builder. "tiny" (the tests') answers in milliseconds; "small" has the real
# checkpoint's vocabulary width (151,936 rows, tied to the output layer, as in Qwen2.5-VL-3B) and the
# processor's real default pixel budget, so that a benchmark pays what the real model pays outside its
# transformer layers (image patches per 256 px photo, vocabulary-wide logits) on a CPU-sized model.
QWEN_SIZES: dict[str, dict] = {
    "tiny": {
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "num_key_value_heads": 1, "max_position_embeddings": 512},
        "vision": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "window_size": 56,
                   "fullatt_block_indexes": [1]},
        "vocab_size": None,  # the tokenizer's
        "pixels": {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16},  # 4 to 16 image tokens per image
    },
    "small": {
        "text": {"hidden_size": 128, "intermediate_size": 576, "num_hidden_layers": 6,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048},
        "vision": {"depth": 12, "hidden_size": 128, "intermediate_size": 512, "num_heads": 4, "window_size": 112,
                   "fullatt_block_indexes": [3, 7, 11]},
        "vocab_size": 151_936,
        "pixels": {},  # the processor's defaults
    },
}  # fmt: skip


def build_qwen2_5_vl(out: Path, size: str = "tiny") -> Path:
    """``Qwen2_5_VLForConditionalGeneration`` of one of :data:`QWEN_SIZES` (default: a 2-layer vision
    tower and a 2-layer decoder)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2Tokenizer,
        Qwen2VLImageProcessor,
    )

    spec = QWEN_SIZES[size]
    _seed(3)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = _byte_level_bpe(QWEN_SPECIALS)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    _add_special(tokenizer, QWEN_SPECIALS)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    pixels = spec["pixels"]  # 28x28 pixels per merged image token
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        tokenizer=tokenizer,
        video_processor=_qwen_video_processor(**pixels),
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    text = spec["text"]
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    half = head_dim // 2  # rotary pairs, split over the temporal, height and width positions
    sections = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    vocab_size = spec["vocab_size"] or len(tokenizer)
    tied = {"tie_word_embeddings": True} if spec["vocab_size"] else {}  # as in the 3B checkpoint
    config = Qwen2_5_VLConfig(
        text_config={
            **text, "vocab_size": vocab_size,
            "rope_parameters": {"rope_type": "default", "mrope_section": sections, "rope_theta": 10000.0},
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"], **tied,
        },
        vision_config={
            **spec["vision"], "out_hidden_size": text["hidden_size"], "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        **tied,
    )  # fmt: skip
    model = _spread(Qwen2_5_VLForConditionalGeneration(config))
    if vocab_size > len(tokenizer):
        # Rows beyond the tokenizer are padding, as in the real checkpoint: zero logits, never chosen
        # over the random logits of real tokens, so answers decode to text.
        with torch.no_grad():
            model.get_input_embeddings().weight[len(tokenizer) :] = 0.0
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _qwen_video_processor(**pixels: int):
    from transformers import Qwen2VLVideoProcessor

    return Qwen2VLVideoProcessor(**pixels)


# -- SmolVLM (Idefics3) -------------------------------------------------------------------------------

SMOL_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% elif part['type'] == 'image' %}<image>{% endif %}"
    "{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
IDEFICS3_TILE = 32
IDEFICS3_PATCH = 8
IDEFICS3_SCALE = 2


def build_idefics3(out: Path) -> Path:
    """``Idefics3ForConditionalGeneration`` (SmolVLM's class) with image splitting into 32px tiles."""
    from transformers import (
        GPT2Tokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    _seed(4)
    out.mkdir(parents=True, exist_ok=True)
    rows = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    specials = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>",
                "<image>", "<global-img>", *rows]  # fmt: skip
    vocab, merges = _byte_level_bpe(specials, vocab_size=460)
    tokenizer = GPT2Tokenizer(
        vocab=vocab, merges=merges, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
        unk_token="<|endoftext|>", pad_token="<|endoftext|>",
    )  # fmt: skip
    _add_special(tokenizer, specials)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]}
    )
    image_seq_len = (IDEFICS3_TILE // IDEFICS3_PATCH) ** 2 // IDEFICS3_SCALE**2
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=True,
        size={"longest_edge": 2 * IDEFICS3_TILE},
        max_image_size={"longest_edge": IDEFICS3_TILE},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=SMOL_CHAT_TEMPLATE,
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<end_of_utterance>", "<image>")}
    config = Idefics3Config(
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": IDEFICS3_TILE, "patch_size": IDEFICS3_PATCH,
        },
        text_config={
            "model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
            "max_position_embeddings": 512, "pad_token_id": ids["<|endoftext|>"],
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": ids["<end_of_utterance>"],
        },
        scale_factor=IDEFICS3_SCALE,
        image_token_id=ids["<image>"],
        pad_token_id=ids["<|endoftext|>"],
    )  # fmt: skip
    model = _spread(Idefics3ForConditionalGeneration(config))
    model.generation_config.eos_token_id = ids["<end_of_utterance>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# -- open_clip -------------------------------------------------------------------------------------------

OPEN_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    # The BPE tokenizer bundled with open_clip has 49408 tokens: the embedding table must match.
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 2},
}


def build_open_clip(out: Path) -> Path:
    """An open_clip CLIP in the folder layout open_clip reads (``open_clip_config.json`` + weights)."""
    import open_clip
    from safetensors.torch import save_file

    _seed(5)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": OPEN_CLIP_CONFIG,
        "preprocess_cfg": {
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
        },
    }
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    model = _spread(open_clip.CLIP(**OPEN_CLIP_CONFIG))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"))
    return out


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "blip": build_blip,
    "blip2": build_blip2,
    "qwen2.5-vl": build_qwen2_5_vl,
    "smolvlm": build_idefics3,
    "clip": build_open_clip,
}


def build(name: str, root: Path) -> Path:
    """The tiny checkpoint for model plugin ``name`` under ``root/name`` (built once per root)."""
    out = root / name
    marker = out / ".complete"
    if not marker.exists():
        BUILDERS[name](out)
        marker.write_text("ok", encoding="utf-8")
    return out


def make_lora_adapter(
    base_dir: Path, out: Path, model_class: str, target_modules: list[str] | str, seed: int = 7
) -> Path:
    """A PEFT LoRA adapter for the checkpoint in ``base_dir`` (loaded with ``transformers.<model_class>``),
    saved to ``out``.

    LoRA's B matrices start at zero, which makes a fresh adapter a no-op; they are filled with random
    values here so that applying the adapter visibly changes a model's outputs.
    """
    import transformers
    from peft import LoraConfig, get_peft_model

    _seed(seed)
    model = getattr(transformers, model_class).from_pretrained(base_dir, local_files_only=True)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=target_modules))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    peft_model.save_pretrained(out)
    return out
