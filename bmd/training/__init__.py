"""Training run folders: the machinery both training loops share (:mod:`bmd.training.folder`)."""
