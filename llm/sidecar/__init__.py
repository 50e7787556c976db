"""The dashboard's sidecar: relays rank 0's records to browsers and their commands back (docs/dashboard.md).

`python -m llm.sidecar` serves it; `create_app` builds the aiohttp application. No torch, no deepspeed:
it starts in a second on a laptop.
"""
