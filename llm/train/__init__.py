"""Engine, loop and checkpoints: the only package (with checkpoint loading) that imports deepspeed."""
