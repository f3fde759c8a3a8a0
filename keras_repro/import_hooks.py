"""Run a function right after a module finishes importing (a post-import hook), without importing it.

`keras_repro.autolog` must act the moment TensorFlow or Keras is imported, and not before: importing
TensorFlow costs seconds, and a process that never trains must not pay them. A finder on
`sys.meta_path` notices the import of a watched top-level module and runs its callbacks once the
*outermost* watched import has finished: `import keras` imports TensorFlow, which imports Keras's
optimizers back, so a callback that ran when TensorFlow's own import ended would meet a half-imported
Keras.

TensorFlow-free and cheap: the finder looks at a module name and returns for every other import.

Example:
    >>> when_imported("json", lambda module: print(module.__name__))   # doctest: +SKIP
    json
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable

__all__ = ["when_imported", "cancel", "find_spec"]

Callback = Callable[[Any], None]


class _Watcher:  # a meta path finder (importlib.abc.MetaPathFinder's protocol; the ABC costs ms to import)
    """Wraps the loader of each watched top-level module so that its callbacks run after it loads."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callback]] = {}
        self.local = threading.local()  # depth of nested watched imports, and callbacks waiting for 0

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in self.callbacks or getattr(self.local, "finding", False):
            return None
        self.local.finding = True
        try:
            spec = _find_with_others(self, name, path, target)
        finally:
            self.local.finding = False
        loader = getattr(spec, "loader", None) if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        self._wrap(name, loader)
        return spec

    def _wrap(self, name: str, loader: Any) -> None:
        original = loader.exec_module  # a fresh loader per spec: patching the instance touches no one else

        def exec_module(module: Any) -> None:
            depth = getattr(self.local, "depth", 0)
            self.local.depth = depth + 1
            try:
                original(module)
            except BaseException:
                self.local.depth = depth
                if depth == 0:
                    self.local.pending = []
                raise
            finally:
                try:
                    del loader.exec_module
                except AttributeError:
                    pass
            self.local.pending = [*getattr(self.local, "pending", []), name]
            self.local.depth = depth
            if depth == 0:
                self._fire()

        loader.exec_module = exec_module

    def _fire(self) -> None:
        pending, self.local.pending = getattr(self.local, "pending", []), []
        for name in pending:
            module = sys.modules.get(name)
            for callback in self.callbacks.pop(name, []):
                if module is not None:
                    callback(module)
        if not self.callbacks:
            _uninstall()


def _find_with_others(watcher: _Watcher, name: str, path: Any, target: Any) -> Any:
    for finder in sys.meta_path:
        if finder is watcher:
            continue
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        spec = find_spec(name, path, target)
        if spec is not None:
            return spec
    return None


_WATCHER: _Watcher | None = None
_LOCK = threading.Lock()


def when_imported(name: str, callback: Callback) -> None:
    """Calls `callback(module)` once the top-level module `name` has been imported (now, if it is).

    Callbacks run after the outermost watched import has finished (see the module docstring), in the
    order they were registered per module, each once. An exception in a callback propagates out of
    the `import` statement that triggered it.
    """
    global _WATCHER
    module = sys.modules.get(name)
    if module is not None and not _importing(module):
        callback(module)
        return
    with _LOCK:
        if _WATCHER is None:
            _WATCHER = _Watcher()
            sys.meta_path.insert(0, _WATCHER)
        _WATCHER.callbacks.setdefault(name, []).append(callback)


def cancel(callback: Callback) -> None:
    """Forgets `callback` for every module it waits for."""
    with _LOCK:
        if _WATCHER is None:
            return
        for name in list(_WATCHER.callbacks):
            _WATCHER.callbacks[name] = [c for c in _WATCHER.callbacks[name] if c is not callback]
            if not _WATCHER.callbacks[name]:
                del _WATCHER.callbacks[name]
    if _WATCHER is not None and not _WATCHER.callbacks:
        _uninstall()


def find_spec(name: str, path: Any = None, target: Any = None) -> Any:
    """The spec the watcher gives for `name` (its loader wrapped when `name` is watched), or None.

    For a finder that runs ahead of the watcher (keras_repro/_bootstrap/sitecustomize.py) and installed
    it while Python was already asking the finders about `name`.
    """
    watcher = _WATCHER
    return watcher.find_spec(name, path, target) if watcher is not None else None


def _importing(module: Any) -> bool:
    """True while `module` is still executing its import (it is in sys.modules already)."""
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _uninstall() -> None:
    global _WATCHER
    if _WATCHER is not None and _WATCHER in sys.meta_path:
        sys.meta_path.remove(_WATCHER)
    _WATCHER = None
