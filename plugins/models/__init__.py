"""Built-in model plugins. Registration is lazy: nothing heavy is imported here (no torch)."""

from vlmbench.api import hookimpl

# One row per model: registered name, implementation ("module:Class" below this package), default
# checkpoint (None: the model has no weights) and that checkpoint's size for listings. A table, so that
# every model is registered the same way and adding one is a line here and a summary below.
_MODELS = (
    ("blip", "blip.vqa:BlipVQA", "Salesforce/blip-vqa-base", "385M"),
    ("lora-blip", "blip.lora:LoraBlip", "base model named by the adapter", "385M + adapter"),
    ("blip2", "blip2:Blip2", "Salesforce/blip2-opt-2.7b", "3.9B"),
    ("qwen2.5-vl", "qwen2_5_vl:Qwen25VL", "Qwen/Qwen2.5-VL-3B-Instruct", "3.8B"),
    ("smolvlm", "smolvlm:SmolVLM", "HuggingFaceTB/SmolVLM-500M-Instruct", "507M"),
    ("clip", "clip:ClipRanker", "ViT-B-32 (openai)", "151M"),
    ("prior", "prior:PriorModel", None, "0"),
    ("vilbert", "vilbert.plugin:VilbertModel", "multi_task_model.bin", "268M"),
    ("ofa", "ofa.plugin:OFAModel", "OFA-Sys/ofa-base", "182M"),
)

# What `vlmbench list` says of each model.
_SUMMARIES = {
    "blip": "BLIP fine-tuned for VQA: image-grounded question encoder + answer decoder",
    "lora-blip": "BLIP VQA with a LoRA adapter (e.g. from `vlmbench finetune`); adapter=DIR required",
    "blip2": "BLIP-2: frozen ViT-g image encoder, Q-Former and OPT-2.7B language model",
    "qwen2.5-vl": "Qwen2.5-VL instruct chat model with native-resolution vision",
    "smolvlm": "SmolVLM instruct chat model (Idefics3 architecture) with image splitting",
    "clip": "CLIP zero-shot answer ranking with open_clip: prompt-ensembled image-text similarity",
    "prior": "Blind baseline: most frequent answer among the most similar training questions (no image, no weights)",
    "vilbert": "ViLBERT 12-in-1 VQA head (closed vocabulary of 3129 answers); grid features are an approximation",
    "ofa": "OFA (One For All) encoder-decoder: beam-search answers, Trie-constrained or all-candidate ranking",
}

# Where a model departs from the common case: CLIP can only rank (it has no decoder), and the LoRA
# variant uses BLIP's prompt template.
_OVERRIDES: dict[str, dict[str, object]] = {
    "clip": {"request_types": ("rank",)},
    "lora-blip": {"family": "blip"},
}


@hookimpl
def register_models(register):
    for name, target, checkpoint, parameters in _MODELS:
        meta = {"request_types": ("generate", "rank"), **_OVERRIDES.get(name, {})}
        register(
            name,
            f"vlmbench_plugins.models.{target}",
            summary=_SUMMARIES[name],
            default_checkpoint=checkpoint,
            parameters=parameters,
            **meta,
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
