"""Moved: ``LoraBlip`` now lives in :mod:`vlmbench_plugins.models.blip.lora`.

This module re-exports it so that old imports keep working; it is kept for one release.
"""

from vlmbench_plugins.models.blip.lora import ADAPTER_CONFIG, FINETUNE_INFO, LoraBlip, resolve_adapter

__all__ = ["ADAPTER_CONFIG", "FINETUNE_INFO", "LoraBlip", "resolve_adapter"]
