"""bmd-cxr: lumbar-spine bone mineral density from a frontal chest X-ray."""

__version__ = "0.1.0"

from bmd.columns import VERTEBRAE

__all__ = ["VERTEBRAE", "__version__"]
