"""The BLIP VQA plugin family: ``blip`` (:mod:`.vqa`), ``lora-blip`` (:mod:`.lora`) and LoRA fine-tuning
with the ``vlmbench finetune`` and ``vlmbench sweep`` commands (:mod:`.finetune`).

Importing this package is cheap: it loads the model classes, which import torch and transformers only
when a model loads.
"""

from vlmbench_plugins.models.blip.vqa import BlipVQA

__all__ = ["BlipVQA"]
