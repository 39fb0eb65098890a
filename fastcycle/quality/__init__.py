"""Image quality without ground truth: FID and KID against the target domain's real images.

inception.py: the standard feature extractor (TF's 2015-12-05 Inception-v3 to pool3, with its resize);
weights.py: its weights found offline and checked by hash; features.py: images -> features in exact
float32; distances.py: FID and KID from features.
"""
