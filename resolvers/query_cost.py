"""The static cost of an operation, computed from its document and variables before anything
executes, and the budget it must stay within (docs/query-cost.md).

Every object a selection would produce counts 1 and a scalar 0, as in Shopify's calculated
cost; a list multiplies its items' cost by how many it can hold: `first` (clamped to the
field's cap), else a size its parent field gives the lists directly under it (a connection's
`first`, a series' bucket count, the longest list in a mutation's input), else an assumed
size. A series (a field taking `from`, `to` and `granularity`) also costs its bucket count
itself: the server builds every bucket whether or not they are selected. Fragments (each
counted once per selection set, as execution collects them), inline fragments, aliases,
`@skip`/`@include` and argument defaults are followed as execution would; fields selected
twice count twice. Introspection is a fixed price per `__schema`/`__type`.

The cost is kept per document, operation and the values of the variables it can depend on
(`_Plan.sizing`), so a repeated operation (a `consumeCredits`) costs a dictionary look-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    NamedTypeNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_operation_ast,
    is_composite_type,
    is_list_type,
    type_from_ast,
)
from graphql.execution.values import VariableValues, get_directive_values, get_variable_values
from graphql.pyutils import Undefined
from graphql.type import GraphQLIncludeDirective
from graphql.utilities.coerce_input_value import coerce_default_value, coerce_input_literal

from models.billing import MAX_PERIODS_PAGE
from models.consumption import Granularity, bucket_range
from models.errors import ValidationFailed
from resolvers.cost_budgets import DEFAULT_BUDGETS
from resolvers.pools import MAX_PAGE
from resolvers.runtime.strawberry_internals import graphql_schema_of

if TYPE_CHECKING:
    from strawberry.types import ExecutionContext

QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"
# Fields whose `first` has a lower cap than MAX_PAGE (beyond it they refuse it).
FIRST_CAPS: dict[str, int] = {"Application.billingPeriods": MAX_PERIODS_PAGE}
# Lists without `first`: the items they are assumed to hold (one per pool, per package...).
DEFAULT_LIST_SIZE = 10
ASSUMED_LIST_SIZES: dict[str, int] = {}
# ... by item type: a payload's errors, one per failed input at most (mostly none).
ASSUMED_ITEM_SIZES: dict[str, int] = {"UserError": 1}
# Fields whose own work is well above one object's.
OWN_COSTS: dict[str, int] = {
    "Application.allocationSummary": 10,  # aggregates every End User's balance in the pool
}
# A whole schema described costs hundreds of times what one type does.
INTROSPECTION_COSTS: dict[str, int] = {"__schema": 2_500, "__type": 100}
SERIES_ARGUMENTS = ("from", "to", "granularity")
PAGE_ARGUMENT = "first"
MAX_PLANS = 1_000
MAX_SHAPES_PER_PLAN = 100


def too_costly(requested: int, limit: int) -> GraphQLError:
    return GraphQLError(
        f"This operation would cost {requested}, over the limit of {limit}: ask for fewer"
        " items (`first`), shorter ranges or coarser granularities.",
        extensions={"code": QUERY_TOO_COSTLY, "cost": requested, "limit": limit},
    )


def check_query_cost(context: ExecutionContext) -> None:
    """Puts `{"requested", "limit"}` in the answer's `extensions.cost`, and refuses an
    operation over the caller's budget before it runs (a pre-execution error, as validation
    errors are: any operation type, subscriptions included). A document that did not parse
    or validate runs nothing: it costs 0. A subscription's messages carry no cost: they are
    rendered once for every subscriber of a selection, whatever their budgets
    (docs/query-cost.md), over our transport and Strawberry's alike."""
    app_context = context.context
    budgets = getattr(app_context, "cost_budgets", DEFAULT_BUDGETS)
    limit = budgets.for_principal(getattr(app_context, "principal", None))
    requested = 0
    document = context.graphql_document
    if document is not None and not context.pre_execution_errors and context.result is None:
        requested = operation_cost(
            graphql_schema_of(context), document, context.operation_name, context.variables
        )
        if requested > limit:
            context.pre_execution_errors = [too_costly(requested, limit)]
    if document is None or not _is_subscription(document, context.operation_name):
        context.extensions_results["cost"] = {"requested": requested, "limit": limit}


def _is_subscription(document: DocumentNode, operation_name: str | None) -> bool:
    operation = get_operation_ast(document, operation_name)
    return operation is not None and operation.operation == OperationType.SUBSCRIPTION


# ------------------------------------------------------------------------------- caching


_MISSING = object()
Shape = tuple[Any, ...]


@dataclass(slots=True)
class _Plan:
    """One operation of one document: the variables its cost can depend on and the costs
    found for their values (kept with the document, so that its id is not reused)."""

    document: DocumentNode
    operation: OperationDefinitionNode | None
    sizing: tuple[str, ...]
    costs: dict[Shape, int] = field(default_factory=dict)


_PLANS: dict[tuple[int, str | None], _Plan] = {}


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> int:
    """The cost of the operation `operation_name` of a validated document with these
    variables (0 when no such operation: execution refuses it)."""
    key = (id(document), operation_name)
    plan = _PLANS.get(key)
    if plan is None or plan.document is not document:
        plan = _plan(schema, document, operation_name)
        _PLANS[key] = plan
        if len(_PLANS) > MAX_PLANS:
            _PLANS.pop(next(iter(_PLANS)))
    raw = variables if isinstance(variables, Mapping) else {}  # else execution refuses it
    shape = tuple(_shape(raw.get(name, _MISSING)) for name in plan.sizing)
    cost = plan.costs.get(shape)
    if cost is not None:
        return cost
    if plan.operation is None:
        return 0
    coerced = _coerced_variables(schema, plan, raw)
    if coerced is None:
        return 0  # refused by execution with the variables' errors; not kept
    cost = _Walk(schema, document, coerced).operation(plan.operation)
    if len(plan.costs) >= MAX_SHAPES_PER_PLAN:
        plan.costs.clear()
    plan.costs[shape] = cost
    return cost


def _plan(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None) -> _Plan:
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return _Plan(document, None, ())
    sizing_types = _sizing_types(schema)
    sizing = tuple(
        definition.variable.name.value
        for definition in operation.variable_definitions or ()
        if _may_size(type_from_ast(schema, definition.type), sizing_types)  # type: ignore[arg-type]
    )
    return _Plan(document, operation, sizing)


_SIZING_TYPES: dict[int, tuple[GraphQLSchema, frozenset[str]]] = {}


def _sizing_types(schema: GraphQLSchema) -> frozenset[str]:
    """The input types the cost reads values of: those of `first`, `from`, `to` and
    `granularity` arguments and of directives' `if`. A variable of another type can change
    the cost only through the length of a list it holds."""
    found = _SIZING_TYPES.get(id(schema))
    if found is not None and found[0] is schema:
        return found[1]
    names = {"Boolean"}  # @skip(if:), @include(if:)
    for type_ in schema.type_map.values():
        if isinstance(type_, GraphQLObjectType):
            for definition in type_.fields.values():
                for name, argument in definition.args.items():
                    if name == PAGE_ARGUMENT or name in SERIES_ARGUMENTS:
                        names.add(get_named_type(argument.type).name)
    types = frozenset(names)
    _SIZING_TYPES[id(schema)] = (schema, types)
    return types


def _may_size(type_: GraphQLInputType | None, sizing_types: frozenset[str]) -> bool:
    if type_ is None:
        return True  # unknown: validation refused it already; kept to be safe
    return get_named_type(type_).name in sizing_types or _holds_list(type_)


def _holds_list(type_: Any, seen: frozenset[str] = frozenset()) -> bool:
    while isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if isinstance(type_, GraphQLList):
        return True
    if isinstance(type_, GraphQLInputObjectType) and type_.name not in seen:
        inner = seen | {type_.name}
        return any(_holds_list(f.type, inner) for f in type_.fields.values())
    return False


def _shape(value: Any) -> Any:
    """What of a variable's value the cost can depend on: a scalar itself, a list or input
    object only its longest list."""
    if isinstance(value, list | dict):
        return ("lists", _longest_list(value))
    return value


def _longest_list(value: Any) -> int:
    """The length of the longest list in a JSON-like value (iteratively: a client's JSON
    may nest deeper than Python recurses)."""
    longest = 0
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            longest = max(longest, len(item))
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
    return longest


def _coerced_variables(
    schema: GraphQLSchema, plan: _Plan, raw: Mapping[str, Any]
) -> VariableValues | None:
    assert plan.operation is not None
    definitions = [
        d for d in plan.operation.variable_definitions or () if d.variable.name.value in plan.sizing
    ]
    coerced = get_variable_values(schema, definitions, dict(raw))
    return None if isinstance(coerced, list) else coerced


# ------------------------------------------------------------------------------- the walk


class _Walk:
    """The cost of one operation with coerced variables (only those that can size it)."""

    def __init__(
        self, schema: GraphQLSchema, document: DocumentNode, variables: VariableValues
    ) -> None:
        self.schema = schema
        self.variables = variables
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        # a fragment's cost per (name, size given to its lists): each body walked once
        self.fragment_costs: dict[tuple[str, int | None], int] = {}

    def operation(self, operation: OperationDefinitionNode) -> int:
        root = self.schema.get_root_type(operation.operation)
        return 0 if root is None else self.selections(root, operation.selection_set, None)

    def selections(
        self, parent: GraphQLObjectType, selection_set: SelectionSetNode, size: int | None
    ) -> int:
        """The selection's cost on objects of `parent`; `size`: the item count of the lists
        directly in it, given by the field that holds it."""
        total = 0
        spread: set[str] = set()
        for selection in selection_set.selections:
            if not self._included(selection):
                continue
            if isinstance(selection, FieldNode):
                total += self.field(parent, selection, size)
            elif isinstance(selection, InlineFragmentNode):
                on = self._condition(selection.type_condition, parent)
                total += self.selections(on, selection.selection_set, size)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in spread:
                    continue  # execution collects a fragment once per selection set
                spread.add(name)
                key = (name, size)
                cost = self.fragment_costs.get(key)
                if cost is None:
                    on = self._condition(fragment.type_condition, parent)
                    cost = self.selections(on, fragment.selection_set, size)
                    self.fragment_costs[key] = cost
                total += cost
        return total

    def field(self, parent: GraphQLObjectType, node: FieldNode, size: int | None) -> int:
        name = node.name.value
        if name.startswith("__"):
            return INTROSPECTION_COSTS.get(name, 0)
        definition = parent.fields.get(name)
        if definition is None:
            return 0  # not on this type: validation refused it
        coordinate = f"{parent.name}.{name}"
        item_type = get_named_type(definition.type)
        own = OWN_COSTS.get(coordinate, 1 if is_composite_type(item_type) else 0)
        buckets = self._buckets(definition, node)
        if buckets is not None:
            own += buckets
        page = self._page(definition, node, coordinate)
        unwrapped = definition.type
        while isinstance(unwrapped, GraphQLNonNull):
            unwrapped = unwrapped.of_type
        if is_list_type(unwrapped):
            if page is not None:
                count = page
            elif size is not None:
                count = size
            else:
                count = ASSUMED_LIST_SIZES.get(
                    coordinate, ASSUMED_ITEM_SIZES.get(item_type.name, DEFAULT_LIST_SIZE)
                )
            under = None
        else:
            count = 1
            under = page if page is not None else buckets
            if under is None:
                under = self._input_lists(definition, node)
        children = 0
        if node.selection_set is not None and isinstance(item_type, GraphQLObjectType):
            children = self.selections(item_type, node.selection_set, under)
        return count * (own + children)

    # ----------------------------------------------------------------------- arguments

    def _argument(self, definition: GraphQLField, node: FieldNode, name: str) -> Any:
        """The argument's value as execution coerces it (its default when not given)."""
        argument = definition.args[name]
        for given in node.arguments or ():
            if given.name.value != name:
                continue
            if isinstance(given.value, VariableNode):
                variable = given.value.name.value
                if variable in self.variables.coerced:
                    return self.variables.coerced[variable]
                break  # an absent variable: the argument's default
            value = coerce_input_literal(given.value, argument.type, self.variables)
            return None if value is Undefined else value
        default = coerce_default_value(argument)
        return None if default is Undefined else default

    def _page(self, definition: GraphQLField, node: FieldNode, coordinate: str) -> int | None:
        """Items a `first` asks for, at most the field's cap; 0 when it is negative or past
        MAX_PAGE, which every list field refuses before any work (VALIDATION)."""
        if PAGE_ARGUMENT not in definition.args:
            return None
        first = self._argument(definition, node, PAGE_ARGUMENT)
        if not isinstance(first, int) or not 0 <= first <= MAX_PAGE:
            return 0
        return min(first, FIRST_CAPS.get(coordinate, MAX_PAGE))

    def _buckets(self, definition: GraphQLField, node: FieldNode) -> int | None:
        """A series' bucket count; 0 for a range its resolver refuses (no work done)."""
        if not all(name in definition.args for name in SERIES_ARGUMENTS):
            return None
        start, end, granularity = (
            self._argument(definition, node, name) for name in SERIES_ARGUMENTS
        )
        try:
            span = bucket_range(start, end, Granularity(getattr(granularity, "value", granularity)))
        except (ValidationFailed, TypeError, ValueError, AttributeError):
            return 0
        return span.count

    def _input_lists(self, definition: GraphQLField, node: FieldNode) -> int | None:
        """The longest list among the arguments (a batch's items), at least 1; None when
        no argument can hold one."""
        lengths = [
            _longest_list(self._argument(definition, node, name))
            for name, argument in definition.args.items()
            if _holds_list(argument.type)
        ]
        return max(1, *lengths) if lengths else None

    # ------------------------------------------------------------------------ selections

    def _included(self, node: Any) -> bool:
        if not node.directives:
            return True
        try:
            skip = get_directive_values(GraphQLSkipDirective, node, self.variables)
            include = get_directive_values(GraphQLIncludeDirective, node, self.variables)
        except GraphQLError:
            return True  # counted: execution refuses it anyway
        if skip is not None and skip.get("if") is True:
            return False
        return not (include is not None and include.get("if") is False)

    def _condition(
        self, condition: NamedTypeNode | None, parent: GraphQLObjectType
    ) -> GraphQLObjectType:
        if condition is None:
            return parent
        named = self.schema.get_type(condition.name.value)
        return named if isinstance(named, GraphQLObjectType) else parent
