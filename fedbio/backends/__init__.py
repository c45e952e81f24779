"""Backends other than fedbio's own PyTorch/Hugging Face models: BioNeMo."""
