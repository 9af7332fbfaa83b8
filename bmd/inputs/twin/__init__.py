"""The twin cohort: a synthetic chest-radiograph + DXA cohort standing in for the paper's private data.

Twin results verify the pipeline, not the clinical claim. See ``data_manifest/twin.md``.
"""

from bmd.inputs.twin.cohort import TwinError, generate_twin, is_complete
from bmd.inputs.twin.spec import TWIN_VERSION, TwinSpec

__all__ = ["TWIN_VERSION", "TwinError", "TwinSpec", "generate_twin", "is_complete"]
