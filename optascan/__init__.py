"""optascan: private, local vision-language inference.

    import optascan
    with optascan.load("path/to/model") as engine:
        for event in engine.stream(prompt="What is on the shelf?", images=["shelf.jpg"]):
            print(event.delta, end="", flush=True)
"""

from .engine.cancel import CancelToken
from .engine.engine import Engine, EngineInfo, load
from .errors import (
    Cancelled,
    EngineClosed,
    EngineError,
    GenerationFailed,
    ImageDecodeError,
    ImageError,
    ImageFetchError,
    ImageNotFound,
    ImageTooLarge,
    InvalidRequest,
    ModelError,
    ModelLoadError,
    ModelNotFound,
    ModelTooLarge,
    OptascanError,
    OutOfMemory,
    QueueFull,
    RequestTooLarge,
    ThermalThrottled,
    VisionNotSupported,
)
from .flow.session import OptaSession
from .images.intake import IntakeSettings
from .models.estimate import MemoryEstimate
from .models.estimate import estimate as estimate_memory
from .types import Event, FinishReason, Request, Result, State, Timings, Usage

__version__ = "0.1.0"

__all__ = [
    "__version__", "load", "Engine", "EngineInfo", "Request", "Event", "Result", "State", "FinishReason",
    "Usage", "Timings", "CancelToken", "IntakeSettings", "estimate_memory", "MemoryEstimate", "OptaSession",
    "OptascanError", "InvalidRequest", "ModelError", "ModelNotFound", "ModelTooLarge", "ModelLoadError",
    "VisionNotSupported",
    "ImageError", "ImageNotFound", "ImageDecodeError", "ImageTooLarge", "ImageFetchError", "EngineError", "QueueFull",
    "EngineClosed", "OutOfMemory", "RequestTooLarge", "ThermalThrottled", "GenerationFailed", "Cancelled",
]
