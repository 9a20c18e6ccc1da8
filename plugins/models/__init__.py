"""Built-in model plugins. Registration is lazy: nothing heavy is imported here (no torch)."""

from vlmbench.api import hookimpl

# One row per model, the only place a built-in model is registered: name, implementation ("module:Class"
# below this package), default checkpoint (None: the model has no weights), that checkpoint's size for
# listings, the request types it answers, and what `vlmbench list` says of it. A model whose prompt
# template is another family's names that family in `_FAMILY`.
_GR = ("generate", "rank")
_MODELS = (
    ("blip", "blip.vqa:BlipVQA", "Salesforce/blip-vqa-base", "385M", _GR,
     "BLIP fine-tuned for VQA: image-grounded question encoder + answer decoder"),
    ("lora-blip", "blip.lora:LoraBlip", "base model named by the adapter", "385M + adapter", _GR,
     "BLIP VQA with a LoRA adapter (e.g. from `vlmbench finetune`); adapter=DIR required"),
    ("blip2", "blip2:Blip2", "Salesforce/blip2-opt-2.7b", "3.9B", _GR,
     "BLIP-2: frozen ViT-g image encoder, Q-Former and OPT-2.7B language model"),
    ("qwen2.5-vl", "qwen2_5_vl:Qwen25VL", "Qwen/Qwen2.5-VL-3B-Instruct", "3.8B", _GR,
     "Qwen2.5-VL instruct chat model with native-resolution vision"),
    ("smolvlm", "smolvlm:SmolVLM", "HuggingFaceTB/SmolVLM-500M-Instruct", "507M", _GR,
     "SmolVLM instruct chat model (Idefics3 architecture) with image splitting"),
    # CLIP can only rank: it has no decoder.
    ("clip", "clip:ClipRanker", "ViT-B-32 (openai)", "151M", ("rank",),
     "CLIP zero-shot answer ranking with open_clip: prompt-ensembled image-text similarity"),
    ("prior", "prior:PriorModel", None, "0", _GR,
     "Blind baseline: most frequent answer among the most similar training questions (no image, no weights)"),
    ("vilbert", "vilbert.plugin:VilbertModel", "multi_task_model.bin", "268M", _GR,
     "ViLBERT 12-in-1 VQA head (closed vocabulary of 3129 answers) on its Visual Genome region-detector features"),
    ("ofa", "ofa.plugin:OFAModel", "OFA-Sys/ofa-base", "182M", _GR,
     "OFA (One For All) encoder-decoder: beam-search answers, Trie-constrained or all-candidate ranking"),
    # Ranking needs a server that returns prompt log-probabilities (vLLM); others are told before any request.
    ("openai-chat", "openai_chat.plugin:OpenAIChat", None, "the server's", _GR,
     "Any VLM behind an OpenAI-compatible chat-completions server (vLLM, SGLang, TGI, transformers serve) or API"),
)  # fmt: skip

# The LoRA variant is prompted as BLIP is.
_FAMILY = {"lora-blip": "blip"}
# Other tools' names of a model: lm-evaluation-harness calls the OpenAI-compatible client so.
_ALIASES = {"openai-chat": ("local-chat-completions",)}


@hookimpl
def register_models(register):
    for name, target, checkpoint, parameters, request_types, summary in _MODELS:
        family = {"family": _FAMILY[name]} if name in _FAMILY else {}
        register(
            name,
            f"vlmbench_plugins.models.{target}",
            summary=summary,
            default_checkpoint=checkpoint,
            parameters=parameters,
            request_types=request_types,
            aliases=_ALIASES.get(name, ()),
            **family,
        )


@hookimpl
def register_commands(cli):
    # `vlmbench check-parity vilbert|ofa FIXTURE.pt`, and BLIP's `vlmbench finetune` and `vlmbench sweep`;
    # the command modules import nothing heavy at load.
    from vlmbench_plugins.models.blip.finetune.commands import add_commands as add_blip
    from vlmbench_plugins.models.ofa.commands import add_commands as add_ofa
    from vlmbench_plugins.models.vilbert.commands import add_commands as add_vilbert

    add_vilbert(cli)
    add_ofa(cli)
    add_blip(cli)
