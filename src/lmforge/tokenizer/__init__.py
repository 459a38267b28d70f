"""Stage 2: train and load tokenizers (byte-level BPE, char, byte), stored as HF `tokenizer.json`."""

from lmforge.tokenizer.core import Tokenizer, load_tokenizer
from lmforge.tokenizer.train import train_tokenizer

__all__ = ["Tokenizer", "load_tokenizer", "train_tokenizer"]
