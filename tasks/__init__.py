"""Thin Prefect tasks (retries, caching off), each calling one core function: `tasks/<area>.py` holds
the tasks of the flows in `flows/<area>/`."""
