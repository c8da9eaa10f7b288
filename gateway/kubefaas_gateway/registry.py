"""Which functions exist, by key `namespace/name`.

Local mode fills the registry once from the manifest folder; the Kubernetes backend will
fill and update it from a watch on Function objects. Readers (the invoke route, the idle
loop, metrics) only ever look functions up here, so both sources look the same to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from kubefaas.api import Function


class FunctionRegistry:
    """Function key ("ns/name") -> Function; a plain dict, cheap on the hot path."""

    def __init__(self, functions: Iterable[Function] = ()) -> None:
        self._functions: dict[str, Function] = {}
        for fn in functions:
            self.put(fn)

    def get(self, key: str) -> Function | None:
        """The function deployed as `key` ("namespace/name"), or None."""
        return self._functions.get(key)

    def put(self, fn: Function) -> None:
        """Add or replace a function (a watch event, or a manifest at startup)."""
        self._functions[fn.key] = fn

    def remove(self, key: str) -> Function | None:
        """Forget a function (deleted); returns what was there."""
        return self._functions.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._functions

    def __iter__(self) -> Iterator[Function]:
        return iter(list(self._functions.values()))

    def __len__(self) -> int:
        return len(self._functions)
