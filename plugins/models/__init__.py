"""Built-in model plugins. Registration is lazy: nothing heavy is imported here (no torch)."""

from vlmbench.api import hookimpl


@hookimpl
def register_models(register):
    register(
        "blip",
        "vlmbench_plugins.models.blip.vqa:BlipVQA",
        summary="BLIP fine-tuned for VQA: image-grounded question encoder + answer decoder",
        default_checkpoint="Salesforce/blip-vqa-base",
        request_types=("generate", "rank"),
        parameters="385M",
    )
    register(
        "lora-blip",
        "vlmbench_plugins.models.blip.lora:LoraBlip",
        summary="BLIP VQA with a LoRA adapter (e.g. from `vlmbench finetune`); adapter=DIR required",
        default_checkpoint="base model named by the adapter",
        request_types=("generate", "rank"),
        parameters="385M + adapter",
        family="blip",
    )
    register(
        "blip2",
        "vlmbench_plugins.models.blip2:Blip2",
        summary="BLIP-2: frozen ViT-g image encoder, Q-Former and OPT-2.7B language model",
        default_checkpoint="Salesforce/blip2-opt-2.7b",
        request_types=("generate", "rank"),
        parameters="3.9B",
    )
    register(
        "qwen2.5-vl",
        "vlmbench_plugins.models.qwen2_5_vl:Qwen25VL",
        summary="Qwen2.5-VL instruct chat model with native-resolution vision",
        default_checkpoint="Qwen/Qwen2.5-VL-3B-Instruct",
        request_types=("generate", "rank"),
        parameters="3.8B",
    )
    register(
        "smolvlm",
        "vlmbench_plugins.models.smolvlm:SmolVLM",
        summary="SmolVLM instruct chat model (Idefics3 architecture) with image splitting",
        default_checkpoint="HuggingFaceTB/SmolVLM-500M-Instruct",
        request_types=("generate", "rank"),
        parameters="507M",
    )
    register(
        "clip",
        "vlmbench_plugins.models.clip:ClipRanker",
        summary="CLIP zero-shot answer ranking with open_clip: prompt-ensembled image-text similarity",
        default_checkpoint="ViT-B-32 (openai)",
        request_types=("rank",),
        parameters="151M",
    )
    register(
        "prior",
        "vlmbench_plugins.models.prior:PriorModel",
        summary="Blind baseline: most frequent answer among the most similar training questions (no image, no weights)",
        request_types=("generate", "rank"),
        parameters="0",
    )
    register(
        "vilbert",
        "vlmbench_plugins.models.vilbert.plugin:VilbertModel",
        summary="ViLBERT 12-in-1 VQA head (closed vocabulary of 3129 answers); grid features are an approximation",
        default_checkpoint="multi_task_model.bin",
        request_types=("generate", "rank"),
        parameters="268M",
    )
    register(
        "ofa",
        "vlmbench_plugins.models.ofa.plugin:OFAModel",
        summary="OFA (One For All) encoder-decoder: beam-search answers, Trie-constrained or all-candidate ranking",
        default_checkpoint="OFA-Sys/ofa-base",
        request_types=("generate", "rank"),
        parameters="182M",
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
