"""The type stubs of the native module (`dynamokv/_native.pyi`) against the module itself, and
the facade's public API against its `__all__` (no server needed).

Every public name of `dynamokv._native` must be declared in the stub, and every function and
method there must take the parameters (names, kinds, defaults) the native code does, as its
runtime text signature reports them."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

import dynamokv
from dynamokv import _native

STUB = Path(dynamokv.__file__).with_name("_native.pyi")

Params = List[Tuple[str, str, Optional[str]]]


def stub_params(fn: ast.FunctionDef) -> Params:
    """(name, kind, default source) of each parameter, `self` left out."""
    a = fn.args
    out: Params = []
    positional = a.posonlyargs + a.args
    defaults: List[Optional[ast.expr]] = [None] * (len(positional) - len(a.defaults))
    defaults += list(a.defaults)
    for p, d in zip(positional, defaults):
        out.append((p.arg, "positional", None if d is None else ast.unparse(d)))
    for p, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append((p.arg, "keyword", None if d is None else ast.unparse(d)))
    return [p for p in out if p[0] != "self"]


def runtime_params(obj: Any) -> Params:
    sig = inspect.signature(obj)
    out: Params = []
    for p in sig.parameters.values():
        if p.name in ("self", "$self"):
            continue
        kind = "keyword" if p.kind is inspect.Parameter.KEYWORD_ONLY else "positional"
        default = None if p.default is inspect.Parameter.empty else repr(p.default)
        out.append((p.name, kind, default))
    return out


def stub() -> Tuple[Dict[str, ast.FunctionDef], Dict[str, Dict[str, ast.FunctionDef]], set]:
    tree = ast.parse(STUB.read_text())
    functions: Dict[str, ast.FunctionDef] = {}
    classes: Dict[str, Dict[str, ast.FunctionDef]] = {}
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions[node.name] = node
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            classes[node.name] = {
                n.name: n for n in node.body if isinstance(n, ast.FunctionDef)
            }
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return functions, classes, names


def public(obj: Any) -> List[str]:
    return [n for n in dir(obj) if not n.startswith("_")]


def test_every_public_native_name_is_in_the_stub() -> None:
    _, _, names = stub()
    missing = [n for n in public(_native) + ["__version__"] if n not in names]
    assert missing == [], f"not in {STUB.name}: {missing}"


def test_native_functions_match_the_stub() -> None:
    functions, _, _ = stub()
    checked = 0
    for name in public(_native):
        obj = getattr(_native, name)
        if inspect.isbuiltin(obj) or inspect.isfunction(obj):
            assert runtime_params(obj) == stub_params(functions[name]), name
            checked += 1
    assert checked >= 4


@pytest.mark.parametrize("cls", ["Client", "BuiltinResolver"])
def test_native_classes_match_the_stub(cls: str) -> None:
    _, classes, _ = stub()
    methods = classes[cls]
    runtime = getattr(_native, cls)
    missing = [n for n in public(runtime) if n not in methods]
    assert missing == [], f"{cls} members not in the stub: {missing}"
    extra = [n for n in methods if not n.startswith("_") and not hasattr(runtime, n)]
    assert extra == [], f"{cls} stub members the module lacks: {extra}"
    for name, fn in methods.items():
        obj = getattr(runtime, name, None)
        if obj is None or isinstance(obj, property) or not callable(obj):
            continue
        if name == "__init__":
            obj = runtime  # pyo3 puts #[new]'s signature on the class
        if getattr(obj, "__text_signature__", None) is None:
            continue
        assert runtime_params(obj) == stub_params(fn), f"{cls}.{name}"


def test_the_stubbed_client_options_are_the_facade_options() -> None:
    _, classes, _ = stub()
    native = [p[0] for p in stub_params(classes["Client"]["__init__"])]
    facade = [n for n in inspect.signature(dynamokv.Client.__init__).parameters if n != "self"]
    assert native == facade


def test_sync_and_async_clients_offer_the_same_methods() -> None:
    sync, aio = dynamokv.Client, dynamokv.AsyncClient
    assert public(sync) == public(aio)
    for name in public(sync):
        s, a = getattr(sync, name), getattr(aio, name)
        if isinstance(s, property):
            continue
        assert inspect.signature(s).parameters.keys() == inspect.signature(a).parameters.keys()
        if name not in ("node_health", "ring_version"):  # local state: plain methods on both
            assert inspect.iscoroutinefunction(a), name


def test_all_names_exist() -> None:
    for module in (dynamokv, dynamokv.resolvers, dynamokv.conformance):
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert missing == [], f"{module.__name__}: {missing}"
    assert STUB.with_name("py.typed").exists()
