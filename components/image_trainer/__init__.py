"""ImageTrainer: the stock TFX Trainer plus an `epochs` execution parameter (see component.py)."""
