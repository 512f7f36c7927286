"""A faster completion of lists of plain objects (consumption buckets, log entries, edges and
their nodes) and of plain objects (a mutation's payload): graphql-core completes every field
of every item through a resolver call, a resolve info, a path and a completion step, a few
microseconds each; a dashboard answer has thousands. `PlainListExecutor` completes such a
list or object straight into dicts when every field selected on it is a plain attribute (a
Strawberry field without resolver, extension, argument or directive) holding a scalar or
enum, or a plain object or list of them selected the same way. The values are serialized by
their own GraphQL types (`coerce_output_value`, the same call graphql-core makes), aliases
and `__typename` answered as graphql-core does.

A resolver field marked `PRELOADED` is read from the attribute its list's resolver filled.
Anything else takes the normal path: a field with a resolver, arguments or directives, an
interface or union, `@defer`/`@stream`, field middleware (an extension with `resolve`), an
item or value that is awaitable, an exception, a null where the type forbids one, or a value
its type cannot serialize. The whole list is then completed again by graphql-core, which
reads the same attributes (plain attributes have no side effects) and reports the error
exactly as it would have."""

from __future__ import annotations

import keyword
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from types import CoroutineType, GeneratorType
from typing import Any

from graphql import (
    FragmentDefinitionNode,
    GraphQLBoolean,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLString,
    OperationDefinitionNode,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
)
from graphql.execution import Executor
from graphql.execution.collect_fields import FieldDetailsList
from graphql.pyutils import Path, Undefined
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import CustomGraphQLEnumType
from strawberry.schema.types.base_scalars import isoformat
from strawberry.types.field import StrawberryField

from resolvers.preserialized import Preserialized
from resolvers.runtime.live_claims import ClaimsLiveEvents


class _NotPlain(Exception):
    """A value the fast path does not complete: graphql-core completes the list instead."""


# How a field completes. The built-in scalars take their values as they are when of the
# exact Python type their coercion returns unchanged (Int within 32 bits, Float finite);
# any other value goes through the type's `coerce_output_value`.
TYPENAME, INT, STRING, BOOLEAN, FLOAT, LEAF, OBJECT, LIST, ENUM, DATETIME = range(10)
_BUILT_IN = {
    GraphQLInt: (INT, int),
    GraphQLString: (STRING, str),
    GraphQLID: (STRING, str),
    GraphQLBoolean: (BOOLEAN, bool),
    GraphQLFloat: (FLOAT, float),
}
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True, slots=True)
class _Field:
    response_name: str
    kind: int
    attribute: str | None  # read with getattr (Strawberry's default resolver)
    read: Callable[[Any], Any] | None  # else through this (another default resolver)
    non_null: bool
    leaf: GraphQLLeafType | None = None
    plan: _Plan | None = None  # the object's, or each item's (LIST)
    item_non_null: bool = False
    enum_class: type | None = None  # ENUM: the Python enum whose members are taken as is,
    enum_names: dict[Any, str] | None = None  # as the names its type serializes them to


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to complete an object of `object_type` for one selection: `complete(source,
    fields, general, info)`, compiled for the shape of `fields` (`_compiled`)."""

    object_type: GraphQLObjectType
    fields: tuple[_Field, ...]
    complete: Callable[..., dict[str, Any]]


# How a compiled completion takes a value as it is (else it calls the general path).
_TAKEN_AS_IS = {
    INT: f"type({{v}}) is int and {_INT_MIN} <= {{v}} <= {_INT_MAX}",
    STRING: "type({v}) is str",
    BOOLEAN: "type({v}) is bool",
    FLOAT: "type({v}) is float and _isfinite({v})",
}
_COMPILED: dict[tuple[Any, ...], Callable[..., dict[str, Any]]] = {}
_MAX_COMPILED = 1_000


def _compiled(type_name: str, fields: tuple[_Field, ...]) -> Callable[..., dict[str, Any]]:
    """A function completing one object of this shape: each field read straight from the
    source, taken as it is when of the exact built-in type its kind wants, any other value
    through the general path (`PlainListExecutor._complete_value`, which also recurses into
    objects and lists), into one dict literal. Made once per shape (response names, kinds,
    attributes), whatever the request, and kept (bounded)."""
    shape = (
        type_name,
        tuple((f.response_name, f.kind, f.attribute, f.non_null) for f in fields),
    )
    found = _COMPILED.get(shape)
    if found is not None:
        return found
    lines = ["def complete(source, fields, general, info):"]
    entries = []
    for index, field in enumerate(fields):
        if field.kind == TYPENAME:
            entries.append(f"{field.response_name!r}: {type_name!r}")
            continue
        v = f"v{index}"
        if field.attribute is None:
            lines.append(f"    {v} = fields[{index}].read(source)")
        elif field.attribute.isidentifier() and not keyword.iskeyword(field.attribute):
            lines.append(f"    {v} = source.{field.attribute}")
        else:
            lines.append(f"    {v} = getattr(source, {field.attribute!r})")
        general = f"{v} = general(fields[{index}], {v}, info)"
        # a null where one may be is taken as it is too
        otherwise = "else" if field.non_null else f"elif {v} is not None"
        if field.kind == ENUM:
            lines.append(f"    {v}_names = fields[{index}].enum_names")
            lines.append(f"    if type({v}) is fields[{index}].enum_class and {v} in {v}_names:")
            lines.append(f"        {v} = {v}_names[{v}]")
            lines.append(f"    {otherwise}: {general}")
        elif field.kind == DATETIME:
            lines.append(f"    if type({v}) is _datetime: {v} = {v}.isoformat()")
            lines.append(f"    {otherwise}: {general}")
        else:
            check = _TAKEN_AS_IS.get(field.kind)
            if check is None:
                condition = "" if field.non_null else f"if {v} is not None: "
            elif field.non_null:
                condition = f"if not ({check.format(v=v)}): "
            else:
                condition = f"if {v} is not None and not ({check.format(v=v)}): "
            lines.append(f"    {condition}{general}")
        entries.append(f"{field.response_name!r}: {v}")
    lines.append("    return {" + ", ".join(entries) + "}")
    namespace: dict[str, Any] = {"_isfinite": math.isfinite, "_datetime": datetime}
    exec("\n".join(lines), namespace)  # our own code: names and literals repr-quoted
    complete = namespace["complete"]
    if len(_COMPILED) < _MAX_COMPILED:
        _COMPILED[shape] = complete
    return complete


_NO_PLAN = object()


def _leaf_field(
    response_name: str,
    attribute: str | None,
    read: Callable[[Any], Any] | None,
    non_null: bool,
    leaf: GraphQLLeafType,
) -> _Field:
    """A leaf's field. Strawberry's enums and DateTime are taken in the compiled completion
    too: an enum member as the name its type's own serialization gives it (asked once per
    member here), an exact datetime as its isoformat() (DateTime's serialization)."""
    kind = _BUILT_IN.get(leaf, (LEAF, None))[0]  # type: ignore[call-overload]
    if isinstance(leaf, CustomGraphQLEnumType):
        names = {}
        for member in leaf.wrapped_cls:
            try:
                names[member] = leaf.coerce_output_value(member)
            except Exception:  # left to the general path, which reports it
                continue
        return _Field(
            response_name,
            ENUM,
            attribute,
            read,
            non_null,
            leaf,
            None,
            False,
            leaf.wrapped_cls,
            names,
        )
    if kind == LEAF and getattr(leaf, "coerce_output_value", None) is isoformat:
        kind = DATETIME
    return _Field(response_name, kind, attribute, read, non_null, leaf)


# Field metadata (`strawberry.field(metadata={PRELOADED: "attribute"})`) of a resolver field
# without arguments or extensions whose value a list's resolver may already have put in
# that attribute of each item (e.g. the End User page's balances, loaded with the page):
# the fast path reads it there, and completes the list through graphql-core, resolver
# included, when an item lacks it (None).
PRELOADED = "usagegraph.preloaded"


def _preloaded_reader(attribute: str) -> Callable[[Any], Any]:
    def read(source: Any) -> Any:
        value = getattr(source, attribute, None)
        if value is None:
            raise _NotPlain
        return value

    return read


def _basic_reader(field_def: Any) -> tuple[str | None, Callable[[Any], Any] | None] | None:
    """How Strawberry's own resolver of a field without resolver or extension reads it: an
    attribute name for getattr, or a call of the configured default resolver; for a
    preloaded field, a read of its attribute (None for any other field)."""
    definition = field_def.extensions.get("strawberry-definition")
    preloaded = (
        definition.metadata.get(PRELOADED) if isinstance(definition, StrawberryField) else None
    )
    if preloaded is not None and not definition.extensions and not field_def.args:  # type: ignore[union-attr]
        return None, _preloaded_reader(preloaded)
    resolve = field_def.resolve
    if resolve is None or getattr(resolve, "__name__", "") != "_get_basic_result":
        return None  # a resolver, an extension or an exception handler runs for it
    if not isinstance(definition, StrawberryField) or not definition.is_basic_field:
        return None
    default, name = definition.default_resolver, definition.python_name
    if default is getattr:
        return name, None
    return None, lambda source: default(source, name)


# Types whose values are neither exceptions nor awaitable (graphql-core asks both of every
# value): learnt once per type instead of asked per value. Not for generators (whether one
# is awaitable depends on its code) nor for a type an instance of which was awaitable.
_INERT_TYPES: set[type] = set()
_MAX_INERT_TYPES = 1_000


def _inert(value: Any, is_awaitable: Callable[[Any], bool]) -> bool:
    value_type = type(value)
    if value_type in _INERT_TYPES:
        return True
    if isinstance(value, Exception) or is_awaitable(value):
        return False
    if (
        not issubclass(value_type, BaseException | GeneratorType | CoroutineType)
        and not hasattr(value_type, "__await__")
        and len(_INERT_TYPES) < _MAX_INERT_TYPES
    ):
        _INERT_TYPES.add(value_type)
    return True


class _AsyncWork:
    """What graphql-core's async helpers (`info.async_helpers`) use of the executor, apart
    from it: its helpers are its own bound methods, a reference cycle that only the cyclic
    collector frees, holding the whole execution's state (the root value, variables,
    collected fields) until a collection comes; every WebSocket subscription left two such
    executions behind. The same methods run on this holder of the same shared state."""

    __slots__ = ("background_futures", "is_awaitable")

    gather_async_work = Executor.gather_async_work
    track_async_work = Executor.track_async_work
    settle_in_background = Executor.settle_in_background

    def __init__(self, executor: Executor) -> None:
        self.is_awaitable = executor.is_awaitable
        self.background_futures = executor.background_futures  # shared with its copies


# Plans shared by the executions of one operation (the parse cache hands every request of
# one query text the same document): keyed by the operation's id, the object type and the
# ids of the field nodes, holding the operation so that its id is not reused while they
# live. Only for documents without directives, whose field groups cannot depend on the
# variables (@skip, @include). Building a dashboard's plans for every request would be a
# visible share of its CPU.
_SHARED_PLANS: dict[tuple[int, GraphQLObjectType, tuple[int, ...]], tuple[Any, Any]] = {}
MAX_SHARED_PLANS = 10_000
_DIRECTIVE_FREE: dict[int, tuple[OperationDefinitionNode, bool]] = {}


def _directive_free(
    operation: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]
) -> bool:
    found = _DIRECTIVE_FREE.get(id(operation))
    if found is not None and found[0] is operation:
        return found[1]
    free = not any(
        getattr(node, "directives", None)
        for root in (operation, *fragments.values())
        for node in _selection_nodes(root)
    )
    _DIRECTIVE_FREE[id(operation)] = (operation, free)
    if len(_DIRECTIVE_FREE) > MAX_SHARED_PLANS:
        _DIRECTIVE_FREE.pop(next(iter(_DIRECTIVE_FREE)))
    return free


def _selection_nodes(root: Any) -> Iterator[Any]:
    """Every field, fragment spread and inline fragment under `root`'s selection set."""
    pending = [root]
    while pending:
        node = pending.pop()
        selection_set = getattr(node, "selection_set", None)
        if selection_set is not None:
            for selection in selection_set.selections:
                yield selection
                pending.append(selection)


class PlainListExecutor(ClaimsLiveEvents, StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor (as Strawberry configures it) with the fast path above, live
    subscriptions claimed by our WebSocket transport (live_claims.py), and
    async helpers that do not refer back to it (`_AsyncWork`): an execution is freed as soon
    as it is done with."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        work = _AsyncWork(self)
        self.async_helpers = GraphQLResolveInfoHelpers(
            gather=work.gather_async_work, track=work.track_async_work
        )
        # (object type, id of the field group) -> (the group, kept alive, and its plan)
        self._plans: dict[tuple[GraphQLObjectType, int], tuple[FieldDetailsList, Any]] = {}
        self._shared = _directive_free(self.operation, self.fragment_definitions)
        middleware = self.middleware_manager
        self._fast = middleware is None or not middleware.middlewares

    def complete_object_value(
        self,
        return_type: GraphQLObjectType,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo,
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        if type(result) is Preserialized:  # the resolver wrote this selection's JSON
            return result
        # a plain object outside a list too (a mutation's payload: balance, replayed, errors)
        if self._fast and position_context is None and return_type.is_type_of is None:
            plan = self._object_plan(return_type, field_details_list)
            if plan is not None:
                try:
                    return self._complete_object(result, plan, info)
                except _NotPlain:
                    pass
        return super().complete_object_value(
            return_type, field_details_list, info, path, result, position_context
        )

    def complete_list_value(
        self,
        return_type: GraphQLList[GraphQLOutputType],
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo,
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        if type(result) is Preserialized:  # the resolver wrote this list's JSON
            return result
        if self._fast and position_context is None and isinstance(result, list | tuple):
            plan = self._list_plan(return_type, field_details_list)
            if plan is not None:
                item_non_null, item_plan = plan
                try:
                    return self._complete_items(result, item_plan, item_non_null, info)
                except _NotPlain:
                    pass
        return super().complete_list_value(
            return_type, field_details_list, info, path, result, position_context
        )

    # ------------------------------------------------------------------------------ plans

    def _list_plan(
        self, list_type: GraphQLList[GraphQLOutputType], field_details_list: FieldDetailsList
    ) -> tuple[bool, _Plan] | None:
        if any(details.node.directives for details in field_details_list):
            return None  # @stream among them
        item_type = list_type.of_type
        item_non_null = is_non_null_type(item_type)
        if item_non_null:
            item_type = item_type.of_type  # type: ignore[attr-defined]
        if not is_object_type(item_type):
            return None
        plan = self._object_plan(item_type, field_details_list)  # type: ignore[arg-type]
        return None if plan is None else (item_non_null, plan)

    def _object_plan(
        self, object_type: GraphQLObjectType, field_details_list: FieldDetailsList
    ) -> _Plan | None:
        key = (object_type, id(field_details_list))
        cached = self._plans.get(key)
        if cached is not None:
            return None if cached[1] is _NO_PLAN else cached[1]
        shared_key = None
        if self._shared:
            nodes = tuple(id(details.node) for details in field_details_list)
            shared_key = (id(self.operation), object_type, nodes)
            found = _SHARED_PLANS.get(shared_key)
            if found is not None and found[0] is self.operation:
                self._plans[key] = (field_details_list, found[1])
                return None if found[1] is _NO_PLAN else found[1]
        plan = self._build_plan(object_type, field_details_list)
        stored = _NO_PLAN if plan is None else plan
        self._plans[key] = (field_details_list, stored)
        if shared_key is not None:
            _SHARED_PLANS[shared_key] = (self.operation, stored)
            if len(_SHARED_PLANS) > MAX_SHARED_PLANS:
                _SHARED_PLANS.pop(next(iter(_SHARED_PLANS)))
        return plan

    def _build_plan(
        self, object_type: GraphQLObjectType, field_details_list: FieldDetailsList
    ) -> _Plan | None:
        if object_type.is_type_of is not None:
            return None  # implements an interface: let graphql-core check each item
        grouped, new_defer_usages, forbidden = self.collect_subfields(
            object_type, field_details_list
        )
        if new_defer_usages or forbidden:
            return None
        fields = []
        for response_name, sub_details in grouped.items():
            first = sub_details[0]
            node = first.node
            if any(
                d.defer_usage is not None
                or d.fragment_variable_values is not None
                or d.node.directives
                or d.node.arguments
                for d in sub_details
            ):
                return None
            if node.name.value == "__typename":
                fields.append(_Field(response_name, TYPENAME, None, None, True))
                continue
            field_def = self.schema.get_field(object_type, node.name.value)
            if field_def is None or field_def.args:
                return None
            reader = _basic_reader(field_def)
            if reader is None:
                return None
            field = self._field(response_name, reader, field_def.type, sub_details)
            if field is None:
                return None
            fields.append(field)
        shaped = tuple(fields)
        return _Plan(object_type, shaped, _compiled(object_type.name, shaped))

    def _field(
        self,
        response_name: str,
        reader: tuple[str | None, Callable[[Any], Any] | None],
        field_type: GraphQLOutputType,
        sub_details: FieldDetailsList,
    ) -> _Field | None:
        attribute, read = reader
        non_null = is_non_null_type(field_type)
        if non_null:
            field_type = field_type.of_type  # type: ignore[attr-defined]
        if is_leaf_type(field_type):
            return _leaf_field(response_name, attribute, read, non_null, field_type)  # type: ignore[arg-type]
        if is_object_type(field_type):
            plan = self._object_plan(field_type, sub_details)  # type: ignore[arg-type]
            if plan is None:
                return None
            return _Field(response_name, OBJECT, attribute, read, non_null, plan=plan)
        if is_list_type(field_type):
            item_type = field_type.of_type  # type: ignore[attr-defined]
            item_non_null = isinstance(item_type, GraphQLNonNull)
            if item_non_null:
                item_type = item_type.of_type
            if not is_object_type(item_type):
                return None
            plan = self._object_plan(item_type, sub_details)
            if plan is None:
                return None
            return _Field(response_name, LIST, attribute, read, non_null, None, plan, item_non_null)
        return None  # an interface or a union

    # ------------------------------------------------------------------------- completion

    def _complete_items(
        self, items: Iterable[Any], plan: _Plan, item_non_null: bool, info: GraphQLResolveInfo
    ) -> list[Any]:
        completed: list[Any] = []
        for item in items:
            if item is None or item is Undefined:
                if item_non_null:
                    raise _NotPlain
                completed.append(None)
            else:
                completed.append(self._complete_object(item, plan, info))
        return completed

    def _complete_object(self, source: Any, plan: _Plan, info: GraphQLResolveInfo) -> Any:
        if type(source) not in _INERT_TYPES and not _inert(source, self.is_awaitable):
            raise _NotPlain
        return plan.complete(source, plan.fields, self._complete_value, info)

    def _complete_value(self, field: _Field, value: Any, info: GraphQLResolveInfo) -> Any:
        """A field's value the compiled completion could not take as it is."""
        if value is None or value is Undefined:
            if field.non_null:
                raise _NotPlain
            return None
        if type(value) not in _INERT_TYPES and not _inert(value, self.is_awaitable):
            raise _NotPlain
        if field.kind == OBJECT:
            return self._complete_object(value, field.plan, info)  # type: ignore[arg-type]
        if field.kind == LIST:
            if not isinstance(value, list | tuple):
                raise _NotPlain
            return self._complete_items(value, field.plan, field.item_non_null, info)  # type: ignore[arg-type]
        try:  # any leaf (or a built-in scalar's value of another type): its own serialization
            coerced = field.leaf.coerce_output_value(value)  # type: ignore[union-attr]
        except Exception:
            raise _NotPlain from None
        if coerced is None or coerced is Undefined:
            raise _NotPlain
        return coerced
