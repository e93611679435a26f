"""Every failure as an OpenAI-shaped error body with a fitting status: a client mistake is never a 500.

    {"error": {"message": ..., "type": ..., "code": ..., "param": ..., "hint": ..., "recoverable": ...}}
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from .. import errors as e

# Most specific first: the first class an error is an instance of decides.
_STATUS: list[tuple[type[BaseException], int, str]] = [
    (e.ImageTooLarge, 413, "image_too_large"),
    (e.RequestTooLarge, 413, "request_too_large"),
    (e.ImageError, 400, "invalid_image"),
    (e.VisionNotSupported, 400, "vision_not_supported"),
    (e.InvalidRequest, 400, "invalid_request_error"),
    (e.ParseError, 422, "unparseable_reply"),
    (e.ModelNotFound, 404, "model_not_found"),
    (e.ModelAccessDenied, 403, "model_access_denied"),
    (e.UnsafeFileName, 400, "unsafe_file_name"),
    (e.QueueFull, 429, "queue_full"),
    (e.EngineClosed, 503, "engine_closed"),
    (e.ThermalThrottled, 503, "thermal_throttled"),
    (e.OutOfMemory, 503, "out_of_memory"),
    (e.ModelTooLarge, 503, "model_too_large"),
    (e.InsufficientDiskSpace, 507, "insufficient_disk_space"),
    (e.Cancelled, 499, "cancelled"),  # on a stream: the client or POST /api/generations/{id}/cancel stopped it
    (e.OptascanError, 500, "internal_error"),
]


class HTTPProblem(Exception):
    """A server-level refusal (bad host, missing key, body too big) in the same error shape."""

    def __init__(self, status: int, message: str, code: str, *, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers


def error_body(message: str, code: str, status: int, *, param: str | None = None, hint: str | None = None,
               recoverable: bool | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
    body: dict[str, Any] = {"message": message, "type": kind, "code": code, "param": param}
    if hint is not None:
        body["hint"] = hint
    if recoverable is not None:
        body["recoverable"] = recoverable
    return {"error": body}


def status_of(error: BaseException) -> tuple[int, str]:
    for cls, status, code in _STATUS:
        if isinstance(error, cls):
            return status, code
    return 500, "internal_error"


def optascan_error_response(error: e.OptascanError) -> JSONResponse:
    status, code = status_of(error)
    headers = {"Retry-After": "1"} if isinstance(error, e.QueueFull) else None
    if isinstance(error, e.ThermalThrottled):
        headers = {"Retry-After": "30"}
    body = error_body(error.message, code, status, param=getattr(error, "field", None), hint=error.hint,
                      recoverable=error.recoverable)
    return JSONResponse(body, status_code=status, headers=headers)


def problem_response(problem: HTTPProblem) -> JSONResponse:
    return JSONResponse(error_body(problem.message, problem.code, problem.status, param=problem.param),
                        status_code=problem.status, headers=problem.headers)
