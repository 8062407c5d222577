"""Deployments, work pools, queues, concurrency limits and automations as idempotent code."""
