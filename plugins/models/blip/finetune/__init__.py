"""LoRA fine-tuning of BLIP VQA (PEFT + accelerate), sweeps over LoRA configurations, QLoRA.

``vlmbench finetune`` / :func:`.trainer.finetune` train an adapter on a task's train split and
validate it on its val split; the ``lora-blip`` model plugin evaluates the result like any other
model; ``vlmbench sweep`` / :func:`.sweep.run_sweep` train a grid of configurations and rank them
against the base model. The BLIP plugin registers both commands (see :mod:`.commands`). See
docs/finetune.md.

Importing this package is cheap: torch, transformers and peft load in the submodules that need them.
"""
