"""Landmarks: the 16 named points, their files, and (later) the graph detector."""

from bmd.landmarks.points import LANDMARK_NAMES, N_LANDMARKS

__all__ = ["LANDMARK_NAMES", "N_LANDMARKS"]
