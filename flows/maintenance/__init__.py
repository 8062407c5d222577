"""Scheduled flows: worker health checks, prompt-cache refresh, stuck-job reaper, usage reports."""
