"""moto_server for the Lambda benchmark, with moto's TransactWriteItems rollback made per item.

moto 5 backs up a table before a transaction by deep-copying the whole table once per
transaction *item* (`transact_write_items`), and restores the copy when the transaction is
cancelled. A transaction of 20 items on a table of 20,000 items therefore copies 400,000 items,
every transaction gets slower as the table grows, and the copies pile up faster than Python's
cyclic collector frees them (about 2 GB a minute; a 5,000-finding run passed 12 GB).

This wrapper backs up only what a transaction can change: the items under the keys it writes,
read before it runs, and written back (or deleted, when they did not exist) if it is cancelled.
moto's own whole-table copy is skipped for the duration of the call, so its rollback
re-installs the same table, and ours restores the items. Results are the same as moto's for
every transaction the store sends (each item names its table and key); only the cost changes,
from the table's size to the transaction's. It is a fixture fix for the benchmark only; the
tests run plain `moto_server`.

Usage: python3 bench/lambda/moto_server.py -H 127.0.0.1 -p PORT   (the arguments of moto_server)
"""

import copy
import sys
import threading

import moto.dynamodb.models as models
from moto.server import main

_local = threading.local()


class _Copy:
    """Stands in for the `copy` module inside moto.dynamodb.models: inside a transaction, a
    `Table` is not copied (its items are backed up one by one instead)."""

    def __getattr__(self, name):
        return getattr(copy, name)

    @staticmethod
    def deepcopy(obj, memo=None):
        if getattr(_local, "in_transaction", False) and isinstance(obj, models.Table):
            return obj
        return copy.deepcopy(obj, memo)


_original = models.DynamoDBBackend.transact_write_items


def _key_of(backend, op_type, op):
    """The (table name, key) an operation writes, or None when its table does not exist."""
    name = op.get("TableName")
    table = backend.tables.get(name)
    if table is None:
        return None
    if op_type == "Put":
        attrs = op.get("Item", {})
        key = {table.hash_key_attr: attrs.get(table.hash_key_attr)}
        if table.range_key_attr is not None:
            key[table.range_key_attr] = attrs.get(table.range_key_attr)
        return name, key
    if "Key" in op:
        return name, op["Key"]
    return None


def transact_write_items(self, transact_items):
    backups = []
    for item in transact_items:
        if len(item) != 1:
            continue  # moto refuses it when it gets there; the items before it are backed up
        op_type, op = next(iter(item.items()))
        if op_type == "ConditionCheck":
            continue  # writes nothing
        target = _key_of(self, op_type, op)
        if target is None:
            continue
        name, key = target
        try:
            old = self.get_item(name, key)
        except Exception:  # a malformed key: moto rejects the operation itself
            continue
        backups.append((name, key, None if old is None else old.to_json()["Attributes"]))
    _local.in_transaction = True
    try:
        return _original(self, transact_items)
    except Exception:
        # Undo in reverse order, so the first backup of a key (its state before the call) wins.
        # Unlike moto, this also undoes the writes before a mid-transaction validation error.
        # A failing restore must not hide the transaction's own error, nor stop the others.
        for name, key, attrs in reversed(backups):
            try:
                if attrs is None:
                    if self.get_item(name, key) is not None:
                        self.delete_item(name, key)
                else:
                    self.put_item(name, attrs)
            except Exception as restore_error:  # noqa: BLE001
                print(f"moto wrapper: restoring {name} {key} failed: {restore_error}", file=sys.stderr)
        raise
    finally:
        _local.in_transaction = False


models.copy = _Copy()
models.DynamoDBBackend.transact_write_items = transact_write_items

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
