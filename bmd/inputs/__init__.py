"""The inputs stage: what the study reads. Manifests, T-score reference tables, the paper's numbers, the twin cohort.

The image reader is :mod:`bmd.io` (its name is part of the public contract). Nothing here imports torch.
"""
