"""Data: text sources, the BPE tokenizer, prepared token memmaps and per-rank batch samplers."""
