"""YAML loading that remembers where every value came from.

Only the safe loader's constructors are used (no Python tags). Each mapping and sequence is returned as a
`Node` wrapper that keeps line numbers per key, so validation can say "office.yaml:42: field 'zones[3].area'".

Hostile or broken documents are refused with a ConfigError before they can exhaust the stack or memory:

- at most `MAX_DOCUMENT_BYTES` (4 MiB) of UTF-8 text: the largest shipped model is ~30 KiB;
- at most `MAX_DEPTH` (64) levels of nesting, counting through aliases: real models nest about 6 deep,
  and PyYAML's composer and constructor recurse once per level (a few thousand levels overflow the stack);
- at most `MAX_NODES` (200,000) scalars, lists and mappings, counting every use of an alias as a full copy
  of what it names (a "billion laughs" document of nested aliases is refused, not expanded);
- no alias may refer to a collection that contains it (recursive data would hang the validators).

Every YAML text the project reads (models, site files, `--set` values, `EDGE_MPC__` environment
overrides) goes through `loads_yaml`, so the same limits hold everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from models.errors import ConfigError

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 200_000


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key and sequence item, within the limits above."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._stack: list[object] = []  # `index` of each node being composed, outermost first
        # Per composed node (by id): (nodes it stands for with aliases expanded, levels it spans).
        self._size: dict[int, tuple[int, int]] = {}

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        """Compose one node, refusing depth, node count and recursive aliases beyond the limits.

        Checked here, while composing, because PyYAML's composer recurses per level: a document a few
        thousand levels deep would raise RecursionError before any later check could run.
        """
        event = self.peek_event()
        collection = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        outer = len(self._stack)  # collections around this node (a scalar never has children on the stack)
        if collection and outer + 1 > MAX_DEPTH:
            raise _limit_error(f"YAML nested more than {MAX_DEPTH} levels deep", event.start_mark,
                               [*self._stack, index], f"at most {MAX_DEPTH} levels of nested lists and mappings",
                               f"more than {MAX_DEPTH}")
        self._stack.append(index)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._stack.pop()
        path = [*self._stack, index]
        if isinstance(event, yaml.AliasEvent):
            if id(node) not in self._size:  # every finished node has a size: this one is still open
                raise _limit_error(f"YAML alias '*{event.anchor}' refers to a collection that contains it",
                                   event.start_mark, path, "aliases to finished values only",
                                   f"*{event.anchor}")
            count, height = self._size[id(node)]
        else:
            children: list[yaml.Node] = []
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = node.value
            sizes = [self._size[id(c)] for c in children]
            count = 1 + sum(c for c, _ in sizes)
            height = 1 + max((h for _, h in sizes), default=0) if collection else 0
            self._size[id(node)] = (count, height)
        if outer + height > MAX_DEPTH:
            raise _limit_error(f"YAML nested more than {MAX_DEPTH} levels deep (through aliases)",
                               event.start_mark, path, f"at most {MAX_DEPTH} levels of nested lists and mappings",
                               f"{outer + height} levels")
        if count > MAX_NODES:
            raise _limit_error(f"YAML document has more than {MAX_NODES} values (aliases count as copies)",
                               event.start_mark, path, f"at most {MAX_NODES} scalars, lists and mappings",
                               f"{count} here")
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """PyYAML's scalar constructors raise plain ValueError, KeyError, AttributeError... on values that
        match a type's pattern but are not valid ('2020-02-30', '!!bool maybe'): one ConfigError instead."""
        try:
            return super().construct_object(node, deep=deep)
        except (ConfigError, yaml.YAMLError):
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, IndexError) as exc:
            if not isinstance(node, yaml.ScalarNode):
                raise
            kind = _SCALAR_KINDS.get(node.tag, node.tag.replace("tag:yaml.org,2002:", "!!"))
            reason = " ".join(str(exc).split()) if isinstance(exc, ValueError) else type(exc).__name__
            raise ConfigError(f"not a valid {kind} ({reason})", line=node.start_mark.line + 1,
                              field=_path(self, node) or None,
                              expected=f"a valid {kind}, or quotes around it to make it text",
                              found=node.value) from None


_SCALAR_KINDS = {"tag:yaml.org,2002:timestamp": "date/time", "tag:yaml.org,2002:int": "integer",
                 "tag:yaml.org,2002:float": "number", "tag:yaml.org,2002:bool": "boolean (true or false)",
                 "tag:yaml.org,2002:binary": "base64 text", "tag:yaml.org,2002:null": "null"}


def _limit_error(message: str, mark: yaml.Mark, stack: list[object], expected: str, found: str) -> ConfigError:
    # The field is built only for the error (composing stays cheap): from the composer's `index` of each
    # level (a key node inside a mapping, a position inside a list, None for the root and for keys).
    path = ""
    for index in stack:
        if isinstance(index, int):
            path = _join(path, index)
        elif isinstance(index, yaml.ScalarNode):
            path = _join(path, index.value)
    # The field of the innermost mapping key: a path of sixty list indices helps nobody.
    field = path
    while field.endswith("]"):
        field = field[:field.rindex("[")]
    if len(field) > 60:
        field = field[:57] + "..."
    return ConfigError(message, line=mark.line + 1, field=field or None, expected=expected, found=found)


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    out: dict = {}
    lines: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool):
            raise ConfigError(
                "mapping keys must be plain scalars", line=key_node.start_mark.line + 1,
                field=_path(loader, node) or None, expected="a string key", found=key)
        if key in out:
            first = lines[key]
            raise ConfigError(f"duplicate key '{key}' (first given on line {first})",
                              line=key_node.start_mark.line + 1, field=_join(_path(loader, node), key),
                              expected="each key once per mapping", found=key)
        out[key] = loader.construct_object(value_node, deep=True)
        # The key's line, not the value's: a block mapping or list value starts on the next line, but an
        # error about the field (unknown, missing inside, wrong type) belongs where its name is written.
        lines[key] = key_node.start_mark.line + 1
    out_marked = MarkedDict(out)
    out_marked.lines = lines
    out_marked.line = node.start_mark.line + 1
    return out_marked


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> list:
    items = [loader.construct_object(child, deep=True) for child in node.value]
    seq = MarkedList(items)
    seq.lines = [child.start_mark.line + 1 for child in node.value]
    seq.line = node.start_mark.line + 1
    return seq


def _join(path: str, key: object) -> str:
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]" if path else f"[{key}]"
    return f"{path}.{key}" if path else str(key)


def _path(loader: _LineLoader, node: yaml.Node) -> str:
    return getattr(loader, "paths", {}).get(id(node), "")


def _assign_paths(loader: _LineLoader, node: yaml.Node, path: str, seen: set[int]) -> None:
    """Dotted field path of every collection node, and refusal of tags the safe loader cannot build.

    Runs on the composed node graph before construction, so that duplicate keys and refused tags can be
    reported with the field they sit in ('zones.z01.volume'), not just a line.
    """
    if id(node) in seen:  # an alias of an anchored node: already visited
        return
    seen.add(id(node))
    if node.tag not in loader.yaml_constructors:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise ConfigError(f"unsupported YAML tag '{tag}' (only plain YAML is accepted; Python tags are refused)",
                          line=node.start_mark.line + 1, field=path or None,
                          expected="plain mappings, lists, strings and numbers", found=tag)
    loader.paths[id(node)] = path
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int" and len(node.value) > 4000:
        # Python refuses to convert more than 4300 digits (a ValueError from deep inside the constructor).
        raise ConfigError("integer has too many digits", line=node.start_mark.line + 1, field=path or None,
                          expected="a number of at most 4000 digits", found=f"{len(node.value)} characters")
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            if key == "<<":
                _assign_paths(loader, value_node, path, seen)
                continue
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:int":
                try:
                    key = int(key, 0)
                except ValueError:
                    pass
            _assign_paths(loader, value_node, _join(path, str(key) if not isinstance(key, int) else key), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, child in enumerate(node.value):
            _assign_paths(loader, child, _join(path, i), seen)


class MarkedDict(dict):
    """A dict that knows the source line of itself and of each key's value."""

    lines: dict
    line: int


class MarkedList(list):
    """A list that knows the source line of itself and of each item."""

    lines: list
    line: int


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(path: str | Path) -> Any:
    """Load one YAML document with line information; errors name the file and line."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_DOCUMENT_BYTES + 1)  # never read a runaway file whole
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a file", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read file ({exc.strerror})", file=str(path)) from None
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise _too_large(str(path), "more than 4 MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError("file is not valid UTF-8 text (save it as UTF-8)", file=str(path), line=line,
                          expected="UTF-8 text", found=raw[exc.start:exc.end]) from None
    return loads_yaml(text, str(path))


def _too_large(filename: str, found: str) -> ConfigError:
    return ConfigError("YAML document too large", file=filename,
                       expected=f"at most {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB of text", found=found)


def loads_yaml(text: str, filename: str = "<string>") -> Any:
    """Parse YAML text with line information (safe constructors only)."""
    size = len(text) if len(text) > MAX_DOCUMENT_BYTES else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCUMENT_BYTES:
        raise _too_large(filename, f"{size / (1024 * 1024):.1f} MiB")
    loader = None
    try:
        loader = _LineLoader(text)
        node = loader.get_single_node()
        if node is None:
            raise ConfigError("file is empty", file=filename, line=1, expected="a YAML mapping (model: ...)",
                              found="no content")
        loader.paths = {}
        _assign_paths(loader, node, "", set())
        data = loader.construct_document(node)
    except ConfigError as exc:
        raise ConfigError(exc.message, file=filename, line=exc.line, field=exc.field,
                          expected=exc.expected, found=exc.found) from None
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise ConfigError(
            f"unsupported YAML content ({exc.problem}); only plain YAML is accepted",
            file=filename, line=mark.line + 1 if mark else None,
            expected="plain mappings, lists, strings and numbers") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        context = f" ({exc.context})" if exc.context else ""
        lines = text.splitlines()
        found = lines[mark.line].strip() if mark and mark.line < len(lines) else None
        raise ConfigError(f"YAML syntax error: {exc.problem}{context}", file=filename,
                          line=mark.line + 1 if mark else None, expected="valid YAML syntax",
                          found=found or None) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(f"YAML cannot contain this character ({exc.reason})", file=filename, line=line,
                          expected="printable text", found=chr(exc.character) if isinstance(exc.character, int)
                          else exc.character) from None
    except yaml.YAMLError as exc:
        raise ConfigError("YAML error: " + " ".join(str(exc).split()), file=filename) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data


class Cursor:
    """A position in a loaded document: the value, its dotted field path, its file and line.

    Validation code walks the document through cursors so that every error it raises points at the spot.
    """

    def __init__(self, value: Any, file: str, field: str = "", line: int | None = None) -> None:
        self.value = value
        self.file = file
        self.field = field
        self.line = line if line is not None else getattr(value, "line", None)

    # -- navigation -------------------------------------------------------------------------------
    def _child_field(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.field}[{key}]"
        return f"{self.field}.{key}" if self.field else str(key)

    def has(self, key: str) -> bool:
        return isinstance(self.value, dict) and key in self.value

    def get(self, key: str, default: Any = ...) -> Cursor:
        """The child at `key`; a missing key without default is an error naming the field."""
        mapping = self.expect_mapping()
        if key not in mapping:
            if default is ...:
                raise self.error(f"missing required field '{key}'", field=self._child_field(key),
                                 expected=f"a value for '{key}'", found=[str(k) for k in mapping])
            return Cursor(default, self.file, self._child_field(key), self.line)
        line = getattr(mapping, "lines", {}).get(key, self.line)
        return Cursor(mapping[key], self.file, self._child_field(key), line)

    def items(self) -> Iterator[tuple[str, Cursor]]:
        mapping = self.expect_mapping()
        for key in mapping:
            yield key, self.get(key)

    def __iter__(self) -> Iterator[Cursor]:
        seq = self.expect_list()
        lines = getattr(seq, "lines", [self.line] * len(seq))
        for i, item in enumerate(seq):
            yield Cursor(item, self.file, self._child_field(i), lines[i])

    def __len__(self) -> int:
        return len(self.value) if isinstance(self.value, list | dict) else 0

    # -- checks -----------------------------------------------------------------------------------
    def error(self, message: str, *, field: str | None = None, expected: str | None = None,
              found: Any = ...) -> ConfigError:
        return ConfigError(message, file=self.file, line=self.line, field=field or self.field or None,
                           expected=expected, found=self.value if found is ... else found)

    def expect_mapping(self) -> dict:
        if not isinstance(self.value, dict):
            raise self.error("wrong type", expected="a mapping (key: value)")
        return self.value

    def expect_list(self) -> list:
        if not isinstance(self.value, list):
            raise self.error("wrong type", expected="a list")
        return self.value

    def only_keys(self, allowed: set[str] | frozenset[str]) -> None:
        """Unknown keys are errors (they are usually typos that would silently do nothing)."""
        for key in self.expect_mapping():
            if key not in allowed:
                child = self.get(key)
                close = _closest(str(key), allowed)
                hint = f" (did you mean '{close}'?)" if close else ""
                raise child.error(f"unknown field '{key}'{hint}", expected="one of " + ", ".join(sorted(allowed)),
                                  found=key)

    def as_str(self) -> str:
        if not isinstance(self.value, str) or not self.value:
            raise self.error("wrong type", expected="a non-empty string")
        return self.value

    def as_bool(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.error("wrong type", expected="true or false")
        return self.value

    def as_int(self, *, minimum: int | None = None) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.error("wrong type", expected="an integer")
        if minimum is not None and self.value < minimum:
            raise self.error("out of range", expected=f"an integer >= {minimum}")
        return self.value

    def as_float(self, *, unit: str | None = None, positive: bool = False, nonnegative: bool = False,
                 low: float | None = None, high: float | None = None) -> float:
        """A finite number, optionally with a unit converted to SI (see models.units)."""
        from models.units import parse_quantity  # local: units imports this module for errors

        value = parse_quantity(self, unit)
        if not math.isfinite(value):
            raise self.error("number is not finite", expected="a finite number")
        if positive and not value > 0:
            raise self.error("must be positive", expected="a value > 0")
        if nonnegative and value < 0:
            raise self.error("must not be negative", expected="a value >= 0")
        if low is not None and value < low:
            raise self.error("out of range", expected=f"a value >= {low}")
        if high is not None and value > high:
            raise self.error("out of range", expected=f"a value <= {high}")
        return value


def _closest(word: str, options: set[str] | frozenset[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.7)
    return match[0] if match else None


def did_you_mean(name: object, options) -> str:
    """' (did you mean 'x'?)' for a misspelt reference, else ''."""
    close = _closest(str(name), frozenset(str(o) for o in options))
    return f" (did you mean '{close}'?)" if close else ""


def listing(options, limit: int = 12) -> str:
    """The names in `options`, comma-separated, the first `limit` of them."""
    names = [str(o) for o in options]
    if not names:
        return "none declared"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
