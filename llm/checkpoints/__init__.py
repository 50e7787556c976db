"""Checkpoints as things to find, check and read: the typed manifest, the catalogue of a run's
checkpoints, and model weights for inference. Nothing here imports DeepSpeed; writing checkpoints
(through the engine, with the commit protocol) lives in llm/train/checkpoint.py.
"""
