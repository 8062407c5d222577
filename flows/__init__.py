"""Prefect flows (generation, enhancement, maintenance): they compose tasks, no business logic."""
