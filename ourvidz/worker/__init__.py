"""The GPU worker (Prefect worker type `ourvidz-gpu`); importing this registers the type with Prefect."""

from ourvidz.worker.worker import OurvidzWorker

__all__ = ["OurvidzWorker"]
