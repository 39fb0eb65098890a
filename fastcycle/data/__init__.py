"""Training data: the loaders and their contract, image folders, preprocessing, the demo dataset."""
