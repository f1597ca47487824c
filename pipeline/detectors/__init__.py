"""Trained detectors: ViTAD and Dinomaly (feature reconstruction) and SOWA (CLIP with learned prompts).

When normal images of the products exist, ViTAD or Dinomaly trained on them scores new images in
O(N) instead of MuSc's O(N^2): they reconstruct the features of a frozen ViT encoder with a
trainable decoder, and where the reconstruction fails, the image departs from what training saw.
SOWA needs no images of the product at all: it is trained once on another labelled dataset
(images with defect masks) and scores any product zero-shot, or few-shot with a few normal images.
"""
