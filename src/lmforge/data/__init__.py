"""Stage 1: raw files -> clean documents (clean shards, rejects with reasons, report)."""
