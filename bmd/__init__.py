"""bmd-cxr: lumbar-spine bone mineral density from a frontal chest X-ray."""

__version__ = "0.1.0"

VERTEBRAE: tuple[str, ...] = ("L1", "L2", "L3", "L4")
