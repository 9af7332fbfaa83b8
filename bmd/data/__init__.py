"""The data stage: manifests, T-score reference tables, the paper's numbers and the twin cohort.

The image reader is :mod:`bmd.io` (its name is part of the public contract). Nothing here imports torch.
"""
