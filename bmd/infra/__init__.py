"""Infrastructure every stage uses: atomic writes, paths, worker processes, progress, figure style, errors.

Imports nothing else from ``bmd`` except :mod:`bmd.columns`, and never torch.
"""
