"""The study: profiles, cohorts, experiments and stages, the summary, provenance, the book and its figures."""
