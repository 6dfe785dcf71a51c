"""Stateless vision operations: boxes (IoU, GIoU, encoding, NMS, RoI Align, anchors)."""
