"""Trained multi-class detectors (feature reconstruction): ViTAD and Dinomaly.

When normal images of the products exist, a detector trained on them scores new images in O(N)
instead of MuSc's O(N^2). Both detectors reconstruct the features of a frozen ViT encoder with a
trainable decoder; where the reconstruction fails, the image departs from what training saw.
"""
