"""Reporting: results tables over runs and seeds, figures, manifests, printed summaries."""
