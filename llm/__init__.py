"""llm: a GPT written from scratch, trained through DeepSpeed ZeRO."""

__version__ = "0.1.0"
