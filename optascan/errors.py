"""The one error tree of optascan.

Every error carries a message saying what the user can do, and a ``recoverable`` flag: ``True`` when
retrying (perhaps after the change the message suggests) can succeed with the same loaded engine, ``False``
when something must be fixed first (a path, a model, the installation).

    OptascanError
    ├── InvalidRequest (ValueError)      a request field is out of range or malformed
    ├── ModelError
    │   ├── ModelNotFound                 no such catalog name, directory or cached hub repo
    │   ├── ModelLoadError                the files are there but could not be loaded
    │   ├── VisionNotSupported            an image was sent to a text-only model
    │   ├── ModelTooLarge                 the model's weights would not fit the memory budget
    │   ├── ModelAccessDenied             a gated or private repo (401/403): accept the licence, set HF_TOKEN
    │   ├── InsufficientDiskSpace         a pull would not fit on disk (with a 20 % margin)
    │   ├── UnsafeFileName                the hub listed a file name with "..", an absolute path or "\\"
    │   ├── IntegrityError                a downloaded file does not match the hub's sha256 or size
    │   └── PullFailed                    the network or the hub failed mid-pull (resumable)
    ├── ImageError (ValueError)
    │   ├── ImageNotFound                 a path that does not exist
    │   ├── ImageDecodeError              corrupt, truncated, empty or not an image
    │   ├── ImageTooLarge                 more bytes or pixels than the configured caps
    │   └── ImageFetchError               an image URL that was refused or could not be fetched
    ├── EngineError
    │   ├── QueueFull                     the bounded request queue is full; retry later
    │   ├── EngineClosed                  the model was unloaded / closed
    │   ├── OutOfMemory                   the device ran out of memory; the engine keeps serving
    │   │   └── RequestTooLarge           refused up front: the request's KV cache would not fit free memory
    │   ├── ThermalThrottled              the GPU is at its slowdown temperature (policy "refuse")
    │   └── GenerationFailed              anything else that went wrong inside generation
    ├── ParseError (ValueError)           a model's reply held no recoverable JSON (``raw`` keeps the text)
    └── Cancelled                         the request was cancelled (raised only when asked for)

Third-party exceptions are wrapped with ``raise ... from err`` so the cause stays visible.
"""

from __future__ import annotations


class OptascanError(Exception):
    """Base of every optascan error. ``hint`` says what to do; ``recoverable`` whether a retry can help."""

    recoverable: bool = False
    default_hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None, recoverable: bool | None = None):
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        if recoverable is not None:
            self.recoverable = recoverable
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict:
        """A JSON-safe description, used by ``--json`` and (later) the server's error bodies."""
        return {"type": type(self).__name__, "message": self.message, "hint": self.hint,
                "recoverable": self.recoverable}


class InvalidRequest(OptascanError, ValueError):
    recoverable = True
    default_hint = "fix the request and send it again"

    def __init__(self, message: str, *, field: str | None = None, **kw):
        self.field = field
        super().__init__(message, **kw)


# --- models ----------------------------------------------------------------------------------------
class ModelError(OptascanError):
    pass


class ModelNotFound(ModelError):
    default_hint = "pass a local model directory or a catalog name that is installed"


class ModelLoadError(ModelError):
    default_hint = "check that the directory holds a complete transformers checkpoint (config, weights, tokenizer)"


class VisionNotSupported(ModelError, ValueError):
    recoverable = True
    default_hint = "send text only, or load a vision-language model"


class ModelTooLarge(ModelError):
    recoverable = True
    default_hint = ("pick a smaller model ('optascan models' lists memory needs), close other models, "
                    "or raise memory_fraction")

    def __init__(self, message: str, *, needed_bytes: int, available_bytes: int, **kw):
        self.needed_bytes, self.available_bytes = needed_bytes, available_bytes
        super().__init__(message, **kw)


class ModelAccessDenied(ModelError):
    default_hint = "accept the model's licence on its hub page, then set HF_TOKEN to a token with access"


class InsufficientDiskSpace(ModelError):
    recoverable = True
    default_hint = "free some disk space or set HF_HOME to a larger disk"

    def __init__(self, message: str, *, needed_bytes: int, free_bytes: int, **kw):
        self.needed_bytes, self.free_bytes = needed_bytes, free_bytes
        super().__init__(message, **kw)


class UnsafeFileName(ModelError):
    default_hint = "the repository lists a file name that could escape the cache; nothing was written"


class IntegrityError(ModelError):
    recoverable = True
    default_hint = "the bad file was deleted; pull again"


class PullFailed(ModelError):
    recoverable = True
    default_hint = "pull again: it resumes from the bytes already on disk"


# --- images ----------------------------------------------------------------------------------------
class ImageError(OptascanError, ValueError):
    recoverable = True


class ImageNotFound(ImageError):
    default_hint = "check the path"


class ImageDecodeError(ImageError):
    default_hint = "send a JPEG, PNG, WebP, GIF, BMP or TIFF image"


class ImageTooLarge(ImageError):
    default_hint = "downscale the image or raise the pixel cap"


class ImageFetchError(ImageError):
    default_hint = "download the image yourself and pass its bytes, or check the URL"


# --- engine ----------------------------------------------------------------------------------------
class EngineError(OptascanError):
    pass


class QueueFull(EngineError):
    recoverable = True
    default_hint = "retry when a running request has finished, or raise max_queue"

    def __init__(self, message: str, *, max_queue: int, **kw):
        self.max_queue = max_queue
        super().__init__(message, **kw)


class EngineClosed(EngineError):
    default_hint = "load the model again"


class OutOfMemory(EngineError):
    recoverable = True
    default_hint = "use a smaller image, fewer max_tokens or a smaller model; the engine is still serving"

    def __init__(self, message: str, *, requested_bytes: int | None = None, free_bytes: int | None = None,
                 device: str | None = None, **kw):
        self.requested_bytes = requested_bytes
        self.free_bytes = free_bytes
        self.device = device
        super().__init__(message, **kw)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "requested_bytes": self.requested_bytes,
                "free_bytes": self.free_bytes, "device": self.device}


class RequestTooLarge(OutOfMemory):
    default_hint = "lower max_tokens, send smaller images or text only"


class ThermalThrottled(EngineError):
    recoverable = True
    default_hint = "let the device cool and retry, or use mode='saver'"

    def __init__(self, message: str, *, temperature_c: float, **kw):
        self.temperature_c = temperature_c
        super().__init__(message, **kw)


class GenerationFailed(EngineError):
    recoverable = True
    default_hint = "retry; if it keeps failing, report it with the model name and the request"


class ParseError(OptascanError, ValueError):
    recoverable = True
    default_hint = "retry (a different seed may help), or use a backend with constrained decoding"

    def __init__(self, message: str, *, raw: str, **kw):
        self.raw = raw
        super().__init__(message, **kw)


class Cancelled(OptascanError):
    """Raised by the blocking call only when it was asked to (``raise_on_cancel=True``)."""

    recoverable = True
    default_hint = "the request was cancelled; its partial text is on ``.result``"

    def __init__(self, message: str = "the request was cancelled", *, result=None, **kw):
        self.result = result
        super().__init__(message, **kw)


__all__ = [
    "OptascanError", "InvalidRequest", "ModelError", "ModelNotFound", "ModelLoadError", "VisionNotSupported",
    "ModelTooLarge", "ModelAccessDenied", "InsufficientDiskSpace", "UnsafeFileName", "IntegrityError", "PullFailed",
    "ImageError", "ImageNotFound", "ImageDecodeError", "ImageTooLarge", "ImageFetchError",
    "EngineError", "QueueFull", "EngineClosed", "OutOfMemory", "RequestTooLarge", "ThermalThrottled",
    "GenerationFailed", "ParseError", "Cancelled",
]
