"""vlmbench: benchmarking harness for single-word VQA."""
__version__ = "0.1.0"
