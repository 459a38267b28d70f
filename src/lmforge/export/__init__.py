"""Export a trained run to other ecosystems (Hugging Face `transformers`)."""
