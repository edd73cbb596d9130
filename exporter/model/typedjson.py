"""Decoded JSON into dataclasses, and their JSON Schema, from one set of type hints and bounds.

A reader is compiled once per type: the hints are read once, not once per object (a
100 000-step document has 100 000 of them), and a value's path (``results[3].speedup_ci``)
is built only when the value is refused. Numbers may be bounded by field name (``Bounds``);
the same bounds become the schema's ``minimum``, ``exclusiveMinimum`` and ``maximum``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Union

from exporter.stats.measurement import finite_number

Reader = Callable[[Any], Any]


class Invalid(ValueError):
    """A value the reader refuses: ``problem`` in words, ``where`` the path to it."""

    def __init__(self, problem: str, where: str = "") -> None:
        super().__init__(problem)
        self.problem, self.where = problem, where

    def inside(self, step: str) -> Invalid:
        """The same error seen one level further out (``step``: ``.name`` or ``[3]``)."""
        self.where = step + self.where
        return self

    def __str__(self) -> str:
        return f"{self.where.lstrip('.') or '(top level)'}: {self.problem}"


@dataclass(frozen=True)
class Bounds:
    """What a number, or each number of a list, may be besides finite; ``interval``: the list
    is ``[low, high]`` with low <= high."""

    minimum: Optional[float] = None  # inclusive
    above: Optional[float] = None  # exclusive
    maximum: Optional[float] = None  # inclusive
    interval: bool = False

    def problem(self, number: float) -> Optional[str]:
        too_low = (self.minimum is not None and number < self.minimum) or (self.above is not None and number <= self.above)
        if too_low or (self.maximum is not None and number > self.maximum):
            return f"must be a number {self.words()}"
        return None

    def words(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"from {self.minimum:g} to {self.maximum:g}"
        low = f">= {self.minimum:g}" if self.minimum is not None else f"> {self.above:g}" if self.above is not None else ""
        high = f"<= {self.maximum:g}" if self.maximum is not None else ""
        return " and ".join(part for part in (low, high) if part)

    def limits(self) -> bool:
        return (self.minimum, self.above, self.maximum) != (None, None, None)

    def of_items(self) -> Optional[Bounds]:
        """The bounds of each number of an interval (or list)."""
        return dataclasses.replace(self, interval=False) if self.limits() else None

    def schema(self) -> dict[str, Any]:
        keywords = {"minimum": self.minimum, "exclusiveMinimum": self.above, "maximum": self.maximum}
        return {key: value for key, value in keywords.items() if value is not None}


def show(value: Any) -> str:
    """A value in a message: short, one line, escapes for what cannot be printed."""
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def optional(hint: Any) -> tuple[bool, Any]:
    """(whether None is allowed, the type without None)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        arguments = [a for a in typing.get_args(hint) if a is not type(None)]
        allows_none = len(arguments) < len(typing.get_args(hint))
        return allows_none, arguments[0] if len(arguments) == 1 else Union[tuple(arguments)]
    return False, hint


def required(item: dataclasses.Field) -> bool:
    return item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING


class Types:
    """Readers and schemas of dataclasses whose numbers are bounded by field name: ``bounds``
    maps ``"Class.field"`` or ``"field"`` (every class's field of that name) to its Bounds."""

    def __init__(self, bounds: Mapping[str, Bounds]) -> None:
        self.bounds = dict(bounds)
        self._readers: dict[tuple[Any, Optional[Bounds]], Reader] = {}
        self._objects: dict[type, Reader] = {}  # a class is read the same wherever it is used

    def bounds_of(self, cls: type, name: str) -> Optional[Bounds]:
        return self.bounds.get(f"{cls.__name__}.{name}", self.bounds.get(name))

    def read(self, cls: type, value: Any) -> Any:
        """``value`` as an instance of the dataclass ``cls``; Invalid naming the first bad field.
        Fields the class does not know (a newer writer's) are ignored; missing optional
        fields take their defaults."""
        return self.reader(cls)(value)

    def reader(self, hint: Any, bounds: Optional[Bounds] = None) -> Reader:
        key = (hint, bounds)
        if key not in self._readers:
            self._readers[key] = self._compile(hint, bounds)
        return self._readers[key]

    def _compile(self, hint: Any, bounds: Optional[Bounds]) -> Reader:
        allows_none, hint = optional(hint)
        read = self._compile_type(hint, bounds)

        def nullable(value: Any) -> Any:
            return None if value is None else read(value)

        def not_null(value: Any) -> Any:
            if value is None:
                raise Invalid("must not be null")
            return read(value)

        return nullable if allows_none else not_null

    def _compile_type(self, hint: Any, bounds: Optional[Bounds]) -> Reader:
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if hint not in self._objects:
                self._objects[hint] = self._object_reader(hint)
            return self._objects[hint]
        origin = typing.get_origin(hint)
        if origin is list:
            return self._list_reader(typing.get_args(hint)[0], bounds)
        if origin is dict or hint is dict:  # a document of its own shape (the services document)
            return _mapping
        if origin is Union:  # nice: a number or "idle"
            return _whole_number_or_string
        scalar = _SCALARS.get(hint)
        if scalar is None:
            raise TypeError(f"no reader for a value of type {hint!r}")  # a field type this module lacks
        return scalar if bounds is None or not bounds.limits() else _bounded(scalar, bounds)

    def _object_reader(self, cls: type) -> Reader:
        hints = typing.get_type_hints(cls)
        plan = [(f.name, self.reader(hints[f.name], self.bounds_of(cls, f.name)), required(f))
                for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

        def read_object(value: Any) -> Any:
            if not isinstance(value, dict):
                raise Invalid(f"must be an object, got {show(value)}")
            fields = {}
            for name, read_field, needed in plan:
                if name in value:
                    try:
                        fields[name] = read_field(value[name])
                    except Invalid as exc:
                        raise exc.inside(f".{name}") from None
                elif needed:
                    raise Invalid("missing", f".{name}")
            return cls(**fields)

        return read_object

    def _list_reader(self, item_hint: Any, bounds: Optional[Bounds]) -> Reader:
        read_item = self.reader(item_hint, bounds.of_items() if bounds else None)
        interval = bounds is not None and bounds.interval

        def read_list(value: Any) -> list[Any]:
            if not isinstance(value, list):
                raise Invalid(f"must be a list, got {show(value)}")
            items = []
            for i, item in enumerate(value):
                try:
                    items.append(read_item(item))
                except Invalid as exc:
                    raise exc.inside(f"[{i}]") from None
            if interval and (len(items) != 2 or items[0] > items[1]):
                raise Invalid(f"must be [low, high] with low <= high, got {show(value)}")
            return items

        return read_list

    # --- the schema ------------------------------------------------------------------------

    def schema_of(self, hint: Any, bounds: Optional[Bounds] = None) -> dict[str, Any]:
        allows_none, hint = optional(hint)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            schema: dict[str, Any] = {"$ref": f"#/$defs/{hint.__name__}"}
        elif typing.get_origin(hint) is list:
            schema = {"type": "array", "items": self.schema_of(typing.get_args(hint)[0],
                                                              bounds.of_items() if bounds else None)}
            if bounds is not None and bounds.interval:
                schema.update(minItems=2, maxItems=2, description="[low, high], low <= high")
        elif typing.get_origin(hint) is dict:
            schema = {"type": "object"}
        elif typing.get_origin(hint) is Union:
            schema = {"type": ["integer", "string"]}
        else:
            schema = {"type": {bool: "boolean", int: "integer", float: "number", str: "string"}[hint]}
            schema.update(bounds.schema() if bounds else {})
        if allows_none:
            schema = {"anyOf": [schema, {"type": "null"}]}
        return schema

    def definition(self, cls: Any) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        definition = {"type": "object",
                      "properties": {f.name: self.schema_of(hints[f.name], self.bounds_of(cls, f.name)) for f in fields},
                      "required": [f.name for f in fields if required(f)]}
        if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
            definition["description"] = " ".join(cls.__doc__.split())
        return definition


# --- the scalars -------------------------------------------------------------------------


def _bounded(read: Reader, bounds: Bounds) -> Reader:
    def read_bounded(value: Any) -> Any:
        number = read(value)
        problem = bounds.problem(number)
        if problem:
            raise Invalid(f"{problem}, got {show(value)}")
        return number

    return read_bounded


def _scalar(accepts: Callable[[Any], bool], expected: str, convert: Callable[[Any], Any] = lambda value: value) -> Reader:
    def read_scalar(value: Any) -> Any:
        if not accepts(value):
            raise Invalid(f"must be {expected}, got {show(value)}")
        return convert(value)

    return read_scalar


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_SCALARS: dict[Any, Reader] = {
    bool: _scalar(lambda value: isinstance(value, bool), "true or false"),
    int: _scalar(_whole, "a whole number"),
    float: _scalar(finite_number, "a finite number", float),
    str: _scalar(lambda value: isinstance(value, str), "a string"),
}
_mapping = _scalar(lambda value: isinstance(value, dict), "an object")
_whole_number_or_string = _scalar(lambda value: _whole(value) or isinstance(value, str), "a whole number or a string")
