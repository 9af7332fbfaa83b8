"""The 7 regions of interest: geometry from the landmarks, crops, drawings and the on-disk ROI cache."""
