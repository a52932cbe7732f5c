"""Code the methods share that is not a method itself (packing, round-to-nearest, calibration capture, export
inputs, ...): nothing here registers anything, so ``methods/`` holds only registered methods and ``base.py``."""
