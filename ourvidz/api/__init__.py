"""The gateway: the spec's HTTP API. Routes translate between HTTP and `ourvidz.jobs` (and the other
core modules); nothing here moves a job or talks to Prefect by itself."""
