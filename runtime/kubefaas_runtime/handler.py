"""Loading the user's handler once per instance (the init phase), and init errors.

A function whose code does not import must still be diagnosable from the caller's side,
as on Lambda: instead of crash-looping (where the cause hides in pod logs), the runtime
stays up and answers every invocation with the init error. So a failed load is a value
(``HandlerInitError``) that carries the error document, not a crash.

Error types:

- ``Runtime.MalformedHandlerName``: ``KUBEFAAS_HANDLER`` is not ``module.function``.
- ``Runtime.ImportModuleError``: the module, or something it imports, cannot be found,
  or it has a syntax error (the message says which file and line).
- ``Runtime.HandlerNotFound``: the module has no such attribute, or it is not callable.
- the exception's own type name: anything else raised while the module ran, including
  ``SystemExit``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubefaas_runtime.events import error_body, exception_message, stack_trace

Handler = Callable[[Any, Any], Any]

_MISSING = object()


@dataclass(frozen=True, slots=True)
class LoadedHandler:
    """The user's callable and how to run it."""

    function: Handler
    is_async: bool
    """True for ``async def`` handlers (run on the event loop, not in a thread)."""
    module: str
    name: str


class HandlerInitError(Exception):
    """The init phase failed; the fields form the error document every call answers."""

    def __init__(self, error_type: str, message: str, stack: list[str] | None = None) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.stack = stack or []

    def document(self) -> dict[str, Any]:
        """The error as ``{"errorType", "errorMessage", "stackTrace"}``."""
        return {
            "errorType": self.error_type,
            "errorMessage": self.message,
            "stackTrace": self.stack,
        }

    def body(self) -> bytes:
        """The JSON body of the 500 every invocation is answered with."""
        return error_body(self.error_type, self.message, self.stack)


def split_handler(spec: str) -> tuple[str, str]:
    """``"pkg.mod.fn"`` -> ``("pkg.mod", "fn")``; ``"pkg/mod.fn"`` is accepted as on Lambda."""
    module, _, name = spec.strip().replace("/", ".").rpartition(".")
    if not module or not name or not name.isidentifier():
        raise HandlerInitError(
            "Runtime.MalformedHandlerName",
            f"Bad handler {spec!r}: expected 'module.function', e.g. 'main.handler' "
            "(KUBEFAAS_HANDLER)",
        )
    return module, name


def load_handler(*, code_dir: str, spec: str, deps_dir: str | None = None) -> LoadedHandler:
    """Put ``code_dir`` first on ``sys.path`` (then ``deps_dir``, the function's installed
    requirements), import the module and find the handler.

    The code folder may be a tree (docs/architecture.md, "Packaging"): its sub-folders are
    packages the handler imports as usual. Raises ``HandlerInitError`` for every failure,
    whatever the user's code raised.
    """
    module_name, name = split_handler(spec)
    wanted = [code_dir] if deps_dir is None else [code_dir, deps_dir]
    if sys.path[: len(wanted)] != wanted:
        for entry in wanted:
            if entry in sys.path:
                sys.path.remove(entry)
        sys.path[0:0] = wanted
    # The code may have been written after this interpreter last listed the folder.
    importlib.invalidate_caches()

    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        raise HandlerInitError(
            "Runtime.ImportModuleError",
            f"Syntax error in module {module_name!r}: {exc}",
            _syntax_error_location(exc),
        ) from exc
    except ImportError as exc:
        raise HandlerInitError(
            "Runtime.ImportModuleError",
            f"Unable to import module {module_name!r}: {exc}",
            stack_trace(exc.__traceback__),
        ) from exc
    except BaseException as exc:  # user code may raise anything, even SystemExit
        raise HandlerInitError(
            type(exc).__name__, exception_message(exc), stack_trace(exc.__traceback__)
        ) from exc

    function = getattr(module, name, _MISSING)
    if function is _MISSING:
        raise HandlerInitError(
            "Runtime.HandlerNotFound", f"Handler {name!r} missing on module {module_name!r}"
        )
    if not callable(function):
        raise HandlerInitError(
            "Runtime.HandlerNotFound",
            f"Handler {name!r} on module {module_name!r} is a "
            f"{type(function).__name__}, not a function",
        )
    return LoadedHandler(
        function=function, is_async=_is_async(function), module=module_name, name=name
    )


def _is_async(function: Handler) -> bool:
    if inspect.iscoroutinefunction(function):
        return True
    call = getattr(function, "__call__", None)  # noqa: B004 - an object with async __call__
    return inspect.iscoroutinefunction(call)


def _syntax_error_location(exc: SyntaxError) -> list[str]:
    # The traceback of a SyntaxError holds only import machinery; the useful frame is
    # the offending line, which the exception carries itself.
    if not exc.filename:
        return []
    line = (exc.text or "").strip()
    return [f'  File "{exc.filename}", line {exc.lineno}\n' + (f"    {line}\n" if line else "")]
