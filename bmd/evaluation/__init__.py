"""Evaluation: metrics, prediction frames, screening statistics and the baselines.

Everything here reads predictions (or features) and knows no network; nothing imports torch.
"""
