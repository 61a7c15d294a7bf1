"""Spatial-SSRL: verifiable spatial pretext tasks and GRPO training for vision-language models."""

__version__ = "0.1.0"
