"""Stage 6: evaluation (perplexity, bits-per-byte, strata, unigram baseline), generation with a KV
cache, sample diversity and human ratings, convergence helpers. See `lmforge.eval.perplexity`,
`lmforge.infer.generate` and `lmforge.monitor.convergence`."""
