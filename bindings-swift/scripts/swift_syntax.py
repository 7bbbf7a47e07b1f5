"""Parses Swift files with tree-sitter-swift and fails on any ERROR or MISSING node.

There is no Swift compiler on the build machines; this catches broken syntax (an unbalanced
brace, a bad declaration) in the generated bindings, the facade, Package.swift and the tests.
It does not type-check. Usage: python3 swift_syntax.py FILE...
"""

from __future__ import annotations

import sys

import tree_sitter
import tree_sitter_swift

# A Swift 5.8 attribute the grammar does not know; blanked (same length, so positions hold).
UNKNOWN_ATTRIBUTES = [b"@_documentation(visibility: private)"]


def parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_swift.language()))


def problems(p: tree_sitter.Parser, source: bytes) -> list[str]:
    for attr in UNKNOWN_ATTRIBUTES:
        source = source.replace(attr, b" " * len(attr))
    tree = p.parse(source)
    found: list[str] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            row, col = node.start_point
            kind = "missing " + node.type if node.is_missing else "syntax error"
            text = source[node.start_byte : node.end_byte][:60].decode(errors="replace")
            found.append(f"{row + 1}:{col + 1}: {kind} near {text!r}")
        elif node.has_error:
            stack.extend(node.children)
    return sorted(found, key=lambda s: tuple(int(x) for x in s.split(":")[:2]))


def main(paths: list[str]) -> int:
    p = parser()
    # The check must be able to fail: a broken snippet has to be flagged.
    if not problems(p, b"func f( {\n"):
        print("tree-sitter-swift flagged nothing in broken Swift; the check is useless", file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        with open(path, "rb") as f:
            found = problems(p, f.read())
        for problem in found:
            print(f"{path}:{problem}", file=sys.stderr)
        failed += bool(found)
        print(f"{'FAIL' if found else 'ok  '} {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
