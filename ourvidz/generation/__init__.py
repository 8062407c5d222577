"""The diffusers runtime of a GPU worker: requests in, stored png/mp4 files out. No Prefect here.

`request` and its validation import no torch, so the gateway can check requests cheaply; `runtime`
holds the warm pipelines, the device executor and output writing.
"""
