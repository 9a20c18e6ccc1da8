"""Tests of LoRA fine-tuning, sweeps, the lora-blip plugin and quantisation (a package: own conftest)."""
