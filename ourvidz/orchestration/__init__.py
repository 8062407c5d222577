"""Prefect adapters: the one place the core talks to Prefect.

Flow and deployment names, job and worker events, the flow runs of jobs (create, cancel, read, crash)
and the GPU pool's workers. `ourvidz.jobs` uses these; nothing here knows about job rows.
"""
