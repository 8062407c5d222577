"""The gateway: the spec's HTTP API, and handing accepted jobs to Prefect."""
