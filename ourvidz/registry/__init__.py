"""Registered HTTP workers (the chat worker, the seed system's worker URLs, Prefect workers' status
endpoints) in the `workers` table, and their health probes."""
