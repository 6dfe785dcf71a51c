"""Metrics: classification, Fréchet distance on classifier features."""
