"""The diffusers runtime of a GPU worker: requests in, stored png/mp4 files out. No Prefect here."""

from ourvidz.generation.pipelines import Cancelled, Control
from ourvidz.generation.request import GenerationRequest, InvalidRequest, request_for_job
from ourvidz.generation.runtime import GenerationResult, GenerationRuntime, OutputPlace

__all__ = [
    "Cancelled",
    "Control",
    "GenerationRequest",
    "GenerationResult",
    "GenerationRuntime",
    "InvalidRequest",
    "OutputPlace",
    "request_for_job",
]
