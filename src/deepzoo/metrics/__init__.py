"""Metrics: classification, Fréchet distance on classifier features, likelihoods, retrieval,
detection (COCO-style AP), segmentation (mIoU)."""
