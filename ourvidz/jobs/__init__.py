"""The job life cycle, and the only code that moves a job's status (see docs/lifecycle.md).

Every entry point goes through here: the gateway, a generation run started from Prefect, worker
callbacks, the dispatcher and recovery. Prefect is reached only through `ourvidz.orchestration`.
"""
