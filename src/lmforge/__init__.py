"""lmforge: raw text to a trained, evaluated language model, on the hardware you have."""

__version__ = "0.1.0"
