"""Deployment: the self-describing model bundle, ``bmd predict`` and external evaluation on a site's data."""
