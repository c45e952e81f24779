"""Benchmarks: ``fedbio bench train``, ``bench fed``, ``bench gpu`` and the environment check."""
