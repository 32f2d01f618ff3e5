"""Workflows: the multi-step jobs built on top of training, inference and benchmarking.

The layers below know nothing of them: fold ops, models and checkpoints (the core), data (I/O),
train, infer and backends, then bench, and the workflows here (``demo``, ``fold``) that string
them together (``serve_bench``: `foldcnn serve` under load). Only foldcnn.cli sits above.
"""
