"""Thin Prefect tasks (retries, timeouts, concurrency), each calling one core function of `ourvidz`."""
