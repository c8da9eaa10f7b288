"""The ``context`` argument every handler receives.

Names follow AWS Lambda's Python context (``aws_request_id``,
``get_remaining_time_in_millis()``, ``memory_limit_in_mb``, ...) so handlers written for
Lambda or Tencent SCF run unchanged. One object is built per invocation on the hot path,
hence ``__slots__`` and no work in the constructor beyond storing fields.
"""

from __future__ import annotations

import sys
import time


class Context:
    """What a handler may ask about its invocation and its function.

    ``invocation_type`` is ``sync`` or ``async``; ``attempt`` counts deliveries of the same
    event from 1 (async retries raise it); ``deadline_ms`` is the epoch millisecond after
    which the caller has been answered 504; ``tmp_dir`` is the instance's private scratch
    directory, which survives between invocations on this instance only.
    ``traceparent`` is the W3C Trace Context header the invocation came with (None when
    the caller does not trace, or sent a malformed one); ``trace_id`` is its trace id.
    """

    __slots__ = (
        "attempt",
        "deadline_ms",
        "function_name",
        "function_namespace",
        "function_version",
        "invocation_type",
        "memory_limit_in_mb",
        "request_id",
        "tmp_dir",
        "traceparent",
    )

    # Lambda handlers sometimes read these; kubefaas has neither, so they are None.
    client_context = None
    identity = None

    def __init__(
        self,
        *,
        request_id: str,
        function_name: str,
        function_namespace: str,
        function_version: str,
        memory_limit_in_mb: int,
        invocation_type: str,
        attempt: int,
        tmp_dir: str,
        deadline_ms: int,
        traceparent: str | None = None,
    ) -> None:
        self.request_id = request_id
        self.function_name = function_name
        self.function_namespace = function_namespace
        self.function_version = function_version
        self.memory_limit_in_mb = memory_limit_in_mb
        self.invocation_type = invocation_type
        self.attempt = attempt
        self.tmp_dir = tmp_dir
        self.deadline_ms = deadline_ms
        self.traceparent = traceparent

    @property
    def trace_id(self) -> str | None:
        """The 32 hex digits of the W3C trace id, or None."""
        return self.traceparent[3:35] if self.traceparent else None

    @property
    def aws_request_id(self) -> str:
        """Lambda's name for ``request_id``."""
        return self.request_id

    @property
    def function_arn(self) -> str:
        """A stable identifier of the function version, ARN-like for ported code:
        ``kubefaas:<namespace>:function:<name>:<version>``."""
        return (
            f"kubefaas:{self.function_namespace}:function:"
            f"{self.function_name}:{self.function_version}"
        )

    @property
    def invoked_function_arn(self) -> str:
        """Lambda's name for ``function_arn``."""
        return self.function_arn

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the deadline (0 once it has passed)."""
        return max(0, self.deadline_ms - int(time.time() * 1000))

    def log(self, *args: object) -> None:
        """Write one line to stderr: the request id, a space, then ``args`` joined by spaces.

        Newlines inside the message are escaped as ``\\n`` so a log shipper never splits
        one call into lines without the id. A single ``write`` keeps lines from
        concurrent handler threads whole.
        """
        message = " ".join(str(arg) for arg in args).replace("\n", "\\n")
        sys.stderr.write(f"{self.request_id} {message}\n")

    def __repr__(self) -> str:
        return (
            f"Context(request_id={self.request_id!r}, function={self.function_namespace}/"
            f"{self.function_name}:{self.function_version}, deadline_ms={self.deadline_ms})"
        )
