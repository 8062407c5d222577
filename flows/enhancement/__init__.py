"""Batch and scheduled prompt enhancement."""
