"""Import machinery shared by hf-ext's packages: lazy public names and post-import hooks.

`import hf_ext` (and `hf-ext --help`) must stay cheap: no torch, transformers, TRL, PEFT, mergekit... until a name
that needs them is used. Every package declares its public names once, as an `_import_structure` (submodule ->
names, as transformers and TRL do), and hands it to [`lazy_package`], which derives `__all__` and the lazy look-up
from it. Integrations that must register something with another library (a mergekit merge method, transformers
Auto classes) do it with [`when_imported`], the moment that library's module is imported, or at once when it
already is.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from collections.abc import Callable, Sequence
from importlib.util import find_spec


__all__ = ["MissingExtraError", "lazy_attributes", "lazy_package", "when_imported"]


class MissingExtraError(ImportError):
    """A package of hf-ext was imported without the optional dependencies of its extra.

    Attributes:
        extra (`str`): The extra to install (`pip install "hf-ext[<extra>]"`).
        names (`list[str]`): The public names of the package that cannot be imported.
    """

    def __init__(self, package: str, extra: str, missing: Sequence[str], names: Sequence[str]):
        self.extra = extra
        self.names = list(names)
        super().__init__(
            f"{package} needs {', '.join(missing)}, which is not installed; install it with "
            f'`pip install "hf-ext[{extra}]"` (or "hf-ext[all]").',
            name=package,
        )


def lazy_package(
    package: str,
    import_structure: dict[str, list[str]],
    namespace: dict,
    *,
    extra: str | None = None,
    requires: Sequence[str] = (),
) -> tuple[list[str], Callable, Callable]:
    """`(__all__, __getattr__, __dir__)` of a package whose public names are listed once, by submodule.

    Args:
        package (`str`): the package's `__name__`.
        import_structure (`dict[str, list[str]]`): submodule (relative to `package`) -> the public names it defines.
        namespace (`dict`): the package's `globals()`.
        extra (`str`, *optional*): the extra of hf-ext that installs `requires`.
        requires (`Sequence[str]`, *optional*): top-level modules the package needs; when one is missing,
            importing the package raises [`MissingExtraError`] naming the extra to install.
    """
    names = {name: module for module, module_names in import_structure.items() for name in module_names}
    public = sorted(names)
    missing = [module for module in requires if not _importable(module)]
    if missing:
        raise MissingExtraError(package, extra or "all", missing, public)
    return (public, *lazy_attributes(package, names, namespace))


def _importable(module: str) -> bool:
    if module in sys.modules:  # None there means "blocked" (as tests and sandboxes block a package)
        return sys.modules[module] is not None
    return find_spec(module) is not None


def lazy_attributes(package: str, names: dict[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """`(__getattr__, __dir__)` for a package whose public names are imported on first use.

    Args:
        package (`str`): the package's `__name__`.
        names (`dict[str, str]`): public name -> submodule (relative to `package`) that defines it.
        namespace (`dict`): the package's `globals()`; a name, once imported, is cached there.
    """

    def __getattr__(name: str):
        module_name = names.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module_name}", package), name)
        namespace[name] = value  # later look-ups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__


def when_imported(module_name: str, callback: Callable[[], None]) -> None:
    """Call `callback()` right after the module `module_name` has been imported, or now if it already is.

    A hook for one module runs once; registering the same module again while its hook waits does nothing.
    """
    module = sys.modules.get(module_name)
    if module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False):
        callback()
    elif not any(isinstance(f, _AfterImport) and f.module_name == module_name for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(module_name, callback))


class _AfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `module_name` with the other finders, then wraps its loader so that `callback` runs after the
    module has been executed. Removes itself from `sys.meta_path` on first use."""

    def __init__(self, module_name: str, callback: Callable[[], None]):
        self.module_name = module_name
        self.callback = callback
        self.loader = None

    def find_spec(self, fullname, path, target=None):
        if fullname != self.module_name:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                self.loader, spec.loader = spec.loader, self
                return spec
        return None

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        sys.modules[module.__name__] = module
        self.callback()

    def __getattr__(self, name):  # get_source, get_code, ... for tracebacks and tools
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)
