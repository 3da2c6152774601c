"""Evaluation data and scoring, shared by every layer: datasets (MMLU-Pro, GPQA), recorded pools,
prompt formats, answer extraction (one option alphabet), fit/eval splits and statistics.

It imports nothing above `experts`: routers fit and train on it, the benchmark harness scores on it.
"""
