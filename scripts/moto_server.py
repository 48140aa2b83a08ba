#!/usr/bin/env python3
"""moto server, with DynamoDB's per-item atomicity.

moto serves requests on several threads and its DynamoDB backend takes no lock, so two
concurrent conditional writes can both pass their condition, which real DynamoDB never allows.
The functions rely on that guarantee (one prepay_id per order, one PAID transition per
notification), and the tests prove it with 50 to 100 concurrent requests: this wrapper puts one
lock around every DynamoDB operation, then runs moto's own server with the given arguments.

    moto_server.py -H 127.0.0.1 -p 9200

It also lets a thousand clients connect at once (the fleet test starts 1,000 containers together):
werkzeug's listen backlog of 128 would refuse the rest.
"""
import functools
import inspect
import sys
import threading

import werkzeug.serving
from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

werkzeug.serving.BaseWSGIServer.request_queue_size = 4096

_lock = threading.RLock()


def _locked(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _lock:
            return method(*args, **kwargs)
    return wrapper


for _name, _method in inspect.getmembers(DynamoDBBackend, inspect.isfunction):
    if not _name.startswith("_"):
        setattr(DynamoDBBackend, _name, _locked(_method))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
