"""The GPT, written from scratch. Knows nothing of DeepSpeed, files or the network."""
