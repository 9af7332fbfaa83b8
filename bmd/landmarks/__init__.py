"""Landmarks: the 16 named points, their files, and (later) the graph detector."""

from bmd.columns import LANDMARK_NAMES, N_LANDMARKS

__all__ = ["LANDMARK_NAMES", "N_LANDMARKS"]

# The detector's API is imported lazily: the point names are needed by light code (the twin, manifests)
# that should not pay for importing torch.
_LAZY = {
    "train_landmark_model": "bmd.landmarks.fit", "load_landmark_model": "bmd.landmarks.detector",
    "save_landmark_model": "bmd.landmarks.detector", "predict_landmarks": "bmd.landmarks.detector",
    "evaluate_landmarks": "bmd.landmarks.detector", "recipe_for_profile": "bmd.landmarks.detector",
    "default_input_size": "bmd.landmarks.detector", "LandmarkModel": "bmd.landmarks.detector",
    "LandmarkPredictions": "bmd.landmarks.detector", "LandmarkEvaluation": "bmd.landmarks.detector",
    "import_annotations": "bmd.landmarks.annotations", "AnnotationError": "bmd.landmarks.annotations",
    "read_landmark_csv": "bmd.landmarks.annotations", "write_landmark_csv": "bmd.landmarks.annotations",
    "write_labelme": "bmd.landmarks.annotations", "labelme_paths": "bmd.landmarks.annotations",
    "PlausibilityModel": "bmd.landmarks.plausibility", "LandmarkNet": "bmd.landmarks.model",
    "ModelConfig": "bmd.landmarks.model", "read_detector_config": "bmd.landmarks.folder",
    "detector_digest": "bmd.landmarks.folder",
}
__all__ += list(_LAZY)


def __getattr__(name: str):
    """Import the detector's functions on first use (PEP 562)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
