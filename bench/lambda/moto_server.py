"""moto_server for the Lambda benchmark, with moto's TransactWriteItems made linear.

moto 5 backs up a table before a transaction by deep-copying it once per transaction *item*
(`transact_write_items`), so a transaction of 20 items on a table of 20,000 items copies 400,000
items, and every transaction of the benchmark gets slower as its table grows.
This wrapper makes every deep copy of a `Table` inside one transaction reuse the first: the same
backup, taken once: 1,000 findings in batches of 10 take 35 s instead of 300 s. Nothing else
changes (the rollback still restores that backup). moto's memory still grows by about 2 GB a
minute under such a run, which the cyclic collector does not reclaim, so runs of 5,000 findings
and more exhaust a 24 GB machine. It is a fixture fix for the benchmark only; the tests run plain
`moto_server`.

Usage: python3 bench/lambda/moto_server.py -H 127.0.0.1 -p PORT   (the arguments of moto_server)
"""

import copy
import sys
import threading

import moto.dynamodb.models as models
from moto.server import main

_local = threading.local()


class _Copy:
    """Stands in for the `copy` module inside moto.dynamodb.models."""

    def __getattr__(self, name):
        return getattr(copy, name)

    @staticmethod
    def deepcopy(obj, memo=None):
        cache = getattr(_local, "tables", None)
        if cache is None or not isinstance(obj, models.Table):
            return copy.deepcopy(obj, memo)
        key = id(obj)
        if key not in cache:
            cache[key] = copy.deepcopy(obj, memo)
        return cache[key]


_original = models.DynamoDBBackend.transact_write_items


def transact_write_items(self, transact_items):
    _local.tables = {}
    try:
        return _original(self, transact_items)
    finally:
        _local.tables = None


models.copy = _Copy()
models.DynamoDBBackend.transact_write_items = transact_write_items

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
