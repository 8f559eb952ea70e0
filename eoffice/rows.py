"""Rows written by Core statements built once, for the paths where the ORM's unit of work
cost more than the writes (a send's rows, a worker batch's rows, idempotent inserts).

On PostgreSQL the rows of a call travel as one JSON parameter expanded by
json_populate_recordset: the statement's text depends only on the table and columns, so
SQLAlchemy compiles it once and PostgreSQL prepares it, whatever the number of rows. A
multi-row VALUES statement is compiled anew for every row count, and an executemany with
RETURNING renders a new statement per batch (bench/request_cost.py, py-spy: a tenth of the
API's CPU per send, a sixth of a worker's under load). Elsewhere (SQLite, the embedded
default) the same calls run plain Core statements.

Rows of one call must name the same columns; timestamps must be aware (stored as naive
UTC, as models.UTCDateTime does).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import bindparam, literal_column, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session

T = TypeVar("T")
C = TypeVar("C")


def insert_ignore(session: Session, model: Any, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on either database; True if a row was inserted."""
    statement = _insert_ignore_statement(model.__table__, tuple(values),
                                         session.get_bind().dialect.name)
    return session.execute(statement, values).first() is not None


def insert_ignore_rows(session: Session, model: Any, rows: list[dict[str, Any]]) -> None:
    """insert_ignore for many rows: one statement on PostgreSQL."""
    if not rows:
        return
    table = model.__table__
    columns = same_columns(table, rows)
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        statement = _recordset_insert_ignore(table, columns, bind.dialect.identifier_preparer)
        session.execute(statement, {"rows": json_rows(rows)})
        return
    for row in rows:
        session.execute(_insert_ignore_statement(table, columns, bind.dialect.name), row)


def insert_rows(session: Session, model: type[T], rows: list[dict[str, Any]],
                referenced: Sequence[tuple[Any, list[dict[str, Any]]]] = ()) -> list[T]:
    """Insert rows of a table model and return them as persistent objects, in `rows` order.

    `referenced`: rows of other tables (model, rows) that these rows' foreign keys name,
    inserted first if missing (ON CONFLICT DO NOTHING), such as a document's stored file:
    on PostgreSQL in the same statement, as data-modifying CTEs (foreign keys are checked
    at the end of the statement, when those rows are there); one round trip fewer.

    For rows a request writes in bulk and keeps using (the document, deliveries and events
    of a send): one INSERT whose RETURNING brings back only what the database filled in
    (the serial key). The objects are then made from the values written, as the ORM makes
    a loaded row's object, and attached to the session as clean: the unit of work's flush
    cost about three times the statement per object, and loading every column back as a
    query (the ORM's row processors, psycopg's column descriptions) as much again for a
    document (bench/request_cost.py). The model's field defaults are filled in here, as its
    constructor would; timestamps are held in UTC, as a read gives them.
    """
    if not rows:
        return []
    loadable: Any = model  # a class: hashable, whatever mypy makes of type[T]
    full = [_with_defaults(loadable, row) for row in rows]
    table = loadable.__table__
    columns = same_columns(table, full)
    key, returned = _returned_columns(table, columns)
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        first = tuple((ref.__table__, same_columns(ref.__table__, ref_rows))
                      for ref, ref_rows in referenced)
        statement = _recordset_insert_returning(table, columns, returned,
                                                bind.dialect.identifier_preparer, first)
        parameters = {"rows": json_rows(full), **{
            f"referenced_{position}": json_rows(ref_rows)
            for position, (_, ref_rows) in enumerate(referenced)}}
        filled = session.execute(statement, parameters).all()
    else:
        for ref, ref_rows in referenced:
            insert_ignore_rows(session, ref, ref_rows)
        single = _single_insert_returning(table, columns, returned)
        filled = [session.execute(single, row).one() for row in full]
    if key in columns:  # keys given: match the returned rows by them
        by_key = {row[0]: row for row in filled}
        filled = [by_key[row[key]] for row in full]
    else:
        # Serial keys follow the order of the rows (json_populate_recordset keeps it).
        filled = sorted(filled, key=lambda row: int(row[0]))
    return [_persistent(session, loadable, row, dict(zip(returned, written, strict=True)))
            for row, written in zip(full, filled, strict=True)]


def insert_rows_with_children(session: Session, parent: type[T], parent_rows: list[dict[str, Any]],
                              child: type[C], child_rows: list[dict[str, Any]], link: str
                              ) -> tuple[list[T], list[C]]:
    """insert_rows of `parent` rows and of `child` rows whose column `link` names a parent:
    given as the parent's position in `parent_rows`, written as its new key.

    On PostgreSQL one statement when both tables fill in only their keys (a send's
    deliveries and their events): the parents' INSERT is a CTE, the children's takes the
    new keys from it by position. A round trip and a statement fewer per document; in a
    batch of sends the statements of its documents follow one another, so each one the
    batch waits for counts (bench/routing.py). Elsewhere, two insert_rows.
    """
    if not child_rows:
        return insert_rows(session, parent, parent_rows), []
    loadable_parent: Any = parent
    loadable_child: Any = child
    parents_full = [_with_defaults(loadable_parent, row) for row in parent_rows]
    children_full = [_with_defaults(loadable_child, row) for row in child_rows]
    parent_table, child_table = loadable_parent.__table__, loadable_child.__table__
    parent_columns = same_columns(parent_table, parents_full)
    child_columns = same_columns(child_table, children_full)
    parent_key, parent_returned = _returned_columns(parent_table, parent_columns)
    child_key, child_returned = _returned_columns(child_table, child_columns)
    bind = session.get_bind()
    if (bind.dialect.name != "postgresql" or parent_returned != (parent_key,)
            or child_returned != (child_key,) or parent_key in parent_columns):
        parents = insert_rows(session, parent, parent_rows)
        return parents, insert_rows(session, child, [
            {**row, link: getattr(parents[row[link]], parent_key)} for row in child_rows])
    statement = _linked_insert(parent_table, parent_columns, child_table, child_columns, link,
                               bind.dialect.identifier_preparer)
    written = session.execute(statement, {"parents": json_rows(parents_full),
                                          "children": json_rows(children_full)}).all()
    # Serial keys follow the order of each table's rows (as in insert_rows).
    parent_keys = sorted(int(row[1]) for row in written if row[0] == 0)
    child_keys = sorted(int(row[1]) for row in written if row[0] == 1)
    parents = [_persistent(session, loadable_parent, row, {parent_key: key})
               for row, key in zip(parents_full, parent_keys, strict=True)]
    children = [_persistent(session, loadable_child,
                            {**row, link: parent_keys[row[link]]}, {child_key: key})
                for row, key in zip(children_full, child_keys, strict=True)]
    return parents, children


@lru_cache(maxsize=16)
def _linked_insert(parent_table: Any, parent_columns: tuple[str, ...], child_table: Any,
                   child_columns: tuple[str, ...], link: str, quoting: Any) -> Any:
    parent_key = quoting.quote(next(iter(parent_table.primary_key)).name)
    child_key = quoting.quote(next(iter(child_table.primary_key)).name)
    ctes = _linked_ctes(parent_table, parent_columns, child_table, child_columns, link, quoting)
    return text(f"WITH {ctes} SELECT 0, {parent_key} FROM parents "
                f"UNION ALL SELECT 1, {child_key} FROM children")


def _linked_ctes(parent_table: Any, parent_columns: tuple[str, ...], child_table: Any,
                 child_columns: tuple[str, ...], link: str, quoting: Any,
                 parent_under: tuple[str, str, str] | None = None) -> str:
    """The CTEs `parents`, `positioned` and `children` of a linked insert: parents from JSON
    parameter `parents`, children from `children` naming their parent by position in
    column `link`. `parent_under` (column, CTE, its key): the parents' `column` takes the key
    of the one row of an earlier CTE (their own parent, written in the same statement)."""
    q = quoting.quote
    parent_key = q(next(iter(parent_table.primary_key)).name)
    child_key = q(next(iter(child_table.primary_key)).name)
    if parent_under is None:
        parents_sql = insert_from_recordset(parent_table, parent_columns, "parents", quoting)
    else:
        column, cte, cte_key = parent_under
        target = quoting.format_table(parent_table)
        picked_parent = ", ".join(f"{cte}.{cte_key}" if name == column else f"parent.{q(name)}"
                                  for name in parent_columns)
        parents_sql = (f"INSERT INTO {target} ({', '.join(q(n) for n in parent_columns)}) "
                       f"SELECT {picked_parent} FROM {recordset(target, 'parents')} "
                       f"WITH ORDINALITY AS parent CROSS JOIN {cte} "
                       f"ORDER BY parent.ordinality")
    picked = ", ".join("positioned.new_key" if name == link else f"child.{q(name)}"
                       for name in child_columns)
    return (f"parents AS ({parents_sql} RETURNING {parent_key}), "
            f"positioned AS (SELECT {parent_key} AS new_key, "
            f"row_number() OVER (ORDER BY {parent_key}) - 1 AS position FROM parents), "
            f"children AS (INSERT INTO {quoting.format_table(child_table)} "
            f"({', '.join(q(name) for name in child_columns)}) SELECT {picked} FROM "
            f"{recordset(quoting.format_table(child_table), 'children')} WITH ORDINALITY AS "
            f"child JOIN positioned ON positioned.position = child.{q(link)} "
            f"ORDER BY child.ordinality RETURNING {child_key})")


class Family(NamedTuple):
    """What insert_family wrote: the root, its children and theirs, as persistent objects,
    and the values of the root's columns the statement computed."""

    root: Any
    children: list[Any]
    grandchildren: list[Any]
    computed: dict[str, Any]


def insert_family(session: Session, root: Any, root_row: dict[str, Any], root_link: str,
                  child: Any, child_rows: list[dict[str, Any]], child_link: str,
                  grandchild: Any, grandchild_rows: list[dict[str, Any]], *,
                  referenced: Sequence[tuple[Any, list[dict[str, Any]]]] = (),
                  prelude: str = "", computed: tuple[tuple[str, str], ...] = (),
                  parameters: dict[str, Any] | None = None) -> Family | None:
    """PostgreSQL: one row of `root`, its `child` rows (column `root_link` names the root)
    and their `grandchild` rows (column `child_link` gives their child's position in
    `child_rows`) in ONE statement; None elsewhere or when a table fills in more than its
    key (the caller then writes them one table at a time).

    `referenced` as insert_rows. `prelude`: CTEs written before the root's INSERT (with a
    trailing comma), with their `parameters`; `computed`: (column, SQL) pairs for root
    columns whose value the statement computes from the prelude (a register number), left
    out of `root_row` and returned in Family.computed. A new document sent at once (its row,
    its register number, deliveries and their events) is one round trip instead of three:
    in a batch of sends each statement the batch waits for counts (bench/routing.py).
    """
    if (session.get_bind().dialect.name != "postgresql" or not child_rows
            or not grandchild_rows):
        return None
    models: tuple[Any, Any, Any] = (root, child, grandchild)
    full_root = _with_defaults(root, root_row)
    full_children = [_with_defaults(child, row) for row in child_rows]
    full_grand = [_with_defaults(grandchild, row) for row in grandchild_rows]
    extra = tuple(name for name, _ in computed)
    root_columns = tuple(name for name in same_columns(root.__table__, [full_root])
                         if name not in extra)
    child_columns = same_columns(child.__table__, full_children)
    grand_columns = same_columns(grandchild.__table__, full_grand)
    shapes = [(root.__table__, (*root_columns, *extra)),
              (child.__table__, child_columns), (grandchild.__table__, grand_columns)]
    keys = []
    for table, columns in shapes:
        key, returned = _returned_columns(table, columns)
        if returned != (key,) or key in columns:
            return None
        keys.append(key)
    quoting = session.get_bind().dialect.identifier_preparer
    statement = _family_insert(models, root_columns, computed, root_link, child_columns,
                               grand_columns, child_link, prelude,
                               tuple((ref.__table__, same_columns(ref.__table__, rows))
                                     for ref, rows in referenced), quoting)
    written = session.execute(statement, {
        **(parameters or {}), "root": json_rows([full_root]),
        "parents": json_rows(full_children), "children": json_rows(full_grand),
        **{f"referenced_{position}": json_rows(rows)
           for position, (_, rows) in enumerate(referenced)}}).all()
    root_written = next(row for row in written if row[0] == 0)
    values = dict(zip(extra, root_written[2:2 + len(extra)], strict=True))
    # Serial keys follow the order of each table's rows (as in insert_rows).
    child_keys = sorted(int(row[1]) for row in written if row[0] == 1)
    grand_keys = sorted(int(row[1]) for row in written if row[0] == 2)
    root_key = int(root_written[1])
    made_root = _persistent(session, root, {**full_root, **values}, {keys[0]: root_key})
    children = [_persistent(session, child, {**row, root_link: root_key}, {keys[1]: key})
                for row, key in zip(full_children, child_keys, strict=True)]
    grandchildren = [_persistent(session, grandchild,
                                 {**row, child_link: child_keys[row[child_link]]},
                                 {keys[2]: key})
                     for row, key in zip(full_grand, grand_keys, strict=True)]
    return Family(made_root, children, grandchildren, values)


@lru_cache(maxsize=16)
def _family_insert(models: tuple[Any, Any, Any], root_columns: tuple[str, ...],
                   computed: tuple[tuple[str, str], ...], root_link: str,
                   child_columns: tuple[str, ...], grand_columns: tuple[str, ...],
                   child_link: str, prelude: str,
                   referenced: tuple[tuple[Any, tuple[str, ...]], ...], quoting: Any) -> Any:
    root_table, child_table, grand_table = (model.__table__ for model in models)
    q = quoting.quote
    target = quoting.format_table(root_table)
    root_key = q(next(iter(root_table.primary_key)).name)
    ctes = "".join(f"referenced_{position} AS ("
                   + insert_from_recordset(ref_table, ref_columns, f"referenced_{position}",
                                           quoting, ignore_conflicts=True) + "), "
                   for position, (ref_table, ref_columns) in enumerate(referenced))
    names = ", ".join(q(name) for name in (*root_columns, *(n for n, _ in computed)))
    picked = ", ".join([*(f"given.{q(name)}" for name in root_columns),
                        *(f"({sql})" for _, sql in computed)])
    returned = ", ".join([root_key, *(q(name) for name, _ in computed)])
    root_sql = (f"root AS (INSERT INTO {target} ({names}) SELECT {picked} FROM "
                f"{recordset(target, 'root')} AS given RETURNING {returned})")
    family = _linked_ctes(child_table, child_columns, grand_table, grand_columns, child_link,
                          quoting, parent_under=(root_link, "root", root_key))
    child_key = q(next(iter(child_table.primary_key)).name)
    grand_key = q(next(iter(grand_table.primary_key)).name)
    blanks = ", ".join("NULL" for _ in computed)
    tail = f", {blanks}" if computed else ""
    return text(
        f"WITH {ctes}{prelude} {root_sql}, {family} "
        f"SELECT 0, {root_key}, {', '.join(q(n) for n, _ in computed) or 'NULL'} FROM root "
        f"UNION ALL SELECT 1, {child_key}{tail or ', NULL'} FROM parents "
        f"UNION ALL SELECT 2, {grand_key}{tail or ', NULL'} FROM children")


def _persistent(session: Session, model: Any, values: dict[str, Any],
                filled: dict[str, Any]) -> Any:
    """A clean persistent object of `model` holding `values`: made as the ORM makes a
    loaded row's object (the class manager's new instance, its state's dict filled in),
    not by the model's constructor, which validates and records every attribute as a
    change (SQLModel's: 65 us for a document)."""
    instance = _class_manager(model).new_instance()
    state = instance.__dict__
    for name, value in values.items():
        state[name] = (value.astimezone(UTC) if isinstance(value, datetime) else value)
    state.update(filled)
    make_transient_to_detached(instance)
    session.add(instance)
    return instance


@lru_cache(maxsize=64)
def _class_manager(model: Any) -> Any:
    return sa_inspect(model).class_manager


@lru_cache(maxsize=64)
def _returned_columns(table: Any, columns: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The table's key and what an INSERT of `columns` returns: the key first, then the
    columns left for the database to fill."""
    keys = [column.name for column in table.primary_key]
    if len(keys) != 1:
        raise ValueError(f"insert_rows needs a one-column key ({table.name})")
    return keys[0], (keys[0], *(column.name for column in table.c
                                if column.name not in columns and column.name != keys[0]))


def update_rows(session: Session, model: Any, rows: list[dict[str, Any]],
                key: tuple[str, ...] = ("id",)) -> None:
    """UPDATE many rows by their `key` columns, each with its own values: one statement on
    PostgreSQL (the audit seal writes every new entry's place and hash, the statistics a
    batch's items; one UPDATE per row cost PostgreSQL a parse and an execution each), one
    executemany elsewhere."""
    if not rows:
        return
    table = model.__table__
    if any(name not in row for row in rows for name in key):
        raise ValueError(f"rows for {table.name} need {', '.join(key)}")
    columns = same_columns(table, rows, leave_out=key)
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        statement = _recordset_update(table, columns, key, bind.dialect.identifier_preparer)
        session.execute(statement, {"rows": json_rows(rows)})
        return
    session.execute(_keyed_update(table, columns, key),
                    [{**{f"key_{k}": row[k] for k in key},
                      **{f"new_{c}": row[c] for c in columns}} for row in rows])


def same_columns(table: Any, rows: list[dict[str, Any]], leave_out: tuple[str, ...] = ()
                 ) -> tuple[str, ...]:
    """The columns every row names (in the first row's order, but `leave_out`); ValueError
    if they differ."""
    if not leave_out:  # the common case, without a filter per name
        columns = tuple(rows[0])
        if any(tuple(row) != columns for row in rows[1:]):
            raise ValueError(f"rows for {table.name} differ in their columns")
        return columns
    columns = tuple(name for name in rows[0] if name not in leave_out)
    if any(tuple(name for name in row if name not in leave_out) != columns for row in rows):
        raise ValueError(f"rows for {table.name} differ in their columns")
    return columns


def recordset(target: str, parameter: str) -> str:
    """SQL for the rows of JSON parameter `parameter` typed as table `target`'s rows."""
    return f"json_populate_recordset(NULL::{target}, CAST(:{parameter} AS json))"


def insert_from_recordset(table: Any, columns: tuple[str, ...], parameter: str,
                          quoting: Any, ignore_conflicts: bool = False) -> str:
    """SQL inserting `columns` of the rows of JSON parameter `parameter` into `table`."""
    names = ", ".join(quoting.quote(name) for name in columns)
    target = quoting.format_table(table)
    return (f"INSERT INTO {target} ({names}) SELECT {names} FROM "
            f"{recordset(target, parameter)}"
            + (" ON CONFLICT DO NOTHING" if ignore_conflicts else ""))


def json_rows(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=_json_value, separators=(",", ":"))


def _json_value(value: Any) -> Any:
    # Timestamps are stored as naive UTC (models.UTCDateTime); dates as ISO dates.
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a row")


def _with_defaults(model: Any, row: dict[str, Any]) -> dict[str, Any]:
    static, factories = _model_defaults(model)
    return {**static, **{name: make() for name, make in factories.items()}, **row}


@lru_cache(maxsize=64)
def _model_defaults(model: Any) -> tuple[dict[str, Any], dict[str, Callable[[], Any]]]:
    """A table model's field defaults (the ORM's constructor applies them, Core does not);
    an autoincrement key left out for the database to fill."""
    from pydantic_core import PydanticUndefined

    static: dict[str, Any] = {}
    factories: dict[str, Callable[[], Any]] = {}
    table = model.__table__
    for name, field in model.model_fields.items():
        column = table.c.get(name)
        if column is None or (column.primary_key and column.autoincrement in (True, "auto")
                              and field.default is None):
            continue
        if field.default_factory is not None:
            factories[name] = field.default_factory
        elif field.default is not PydanticUndefined:
            static[name] = field.default
    return static, factories


# Statements are built once per table and columns: SQLAlchemy computes a new statement
# object's cache key on every execution, and only once for one it has seen.

@lru_cache(maxsize=64)
def _insert_ignore_statement(table: Any, columns: tuple[str, ...], dialect: str) -> Any:
    """On the table, not the model (an ORM-enabled INSERT goes through the ORM's bulk path).
    rowcount is -1 under psycopg 3 when SQLAlchemy adds an implicit RETURNING, so the
    statement returns a row instead: one comes back only if the INSERT really happened."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    return (insert(table).values({name: bindparam(name) for name in columns})
            .on_conflict_do_nothing().returning(literal_column("1")))


@lru_cache(maxsize=64)
def _recordset_insert_ignore(table: Any, columns: tuple[str, ...], quoting: Any) -> Any:
    return text(insert_from_recordset(table, columns, "rows", quoting, ignore_conflicts=True))


@lru_cache(maxsize=64)
def _recordset_insert_returning(table: Any, columns: tuple[str, ...],
                                returned: tuple[str, ...], quoting: Any,
                                referenced: tuple[tuple[Any, tuple[str, ...]], ...] = ()
                                ) -> Any:
    ctes = [f"referenced_{position} AS ("
            + insert_from_recordset(ref_table, ref_columns, f"referenced_{position}", quoting,
                                    ignore_conflicts=True) + ")"
            for position, (ref_table, ref_columns) in enumerate(referenced)]
    with_clause = f"WITH {', '.join(ctes)} " if ctes else ""
    back = ", ".join(quoting.quote(name) for name in returned)
    return text(f"{with_clause}{insert_from_recordset(table, columns, 'rows', quoting)} "
                f"RETURNING {back}").columns(*(table.c[name] for name in returned))


@lru_cache(maxsize=64)
def _single_insert_returning(table: Any, columns: tuple[str, ...],
                             returned: tuple[str, ...]) -> Any:
    return (table.insert().values({name: bindparam(name) for name in columns})
            .returning(*(table.c[name] for name in returned)))


@lru_cache(maxsize=16)
def _recordset_update(table: Any, columns: tuple[str, ...], key: tuple[str, ...],
                      quoting: Any) -> Any:
    q = quoting.quote
    target = quoting.format_table(table)
    assignments = ", ".join(f"{q(c)} = changed.{q(c)}" for c in columns)
    match = " AND ".join(f"{target}.{q(k)} = changed.{q(k)}" for k in key)
    return text(f"UPDATE {target} SET {assignments} FROM {recordset(target, 'rows')} "
                f"AS changed WHERE {match}")


@lru_cache(maxsize=16)
def _keyed_update(table: Any, columns: tuple[str, ...], key: tuple[str, ...]) -> Any:
    from sqlalchemy import and_, update

    return (update(table).where(and_(*(table.c[k] == bindparam(f"key_{k}") for k in key)))
            .values({c: bindparam(f"new_{c}") for c in columns}))
