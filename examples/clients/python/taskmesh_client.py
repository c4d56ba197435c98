#!/usr/bin/env python3
"""A TaskMesh client over the socket protocol, written from docs/protocol.md alone.

    taskmesh_client.py submit GRAPH.json --server HOST:PORT [--token-file F] [--wait] [--tls | --ca-file CERT.pem]

submits a graph file; with --wait, waits for the run to end and prints its final state as JSON
({"run_id", "status", "tasks": {...}}), exiting 0 when every task succeeded, 1 when some did not,
2 when the service refused the graph (its problems on standard error). Without --wait it prints
{"run_id"} and exits 0.

    taskmesh_client.py get PATH [--query NAME=VALUE ...] --server HOST:PORT [--token-file F] [--tls | --ca-file CERT.pem]

prints the read at PATH (layers, workers, metrics, metrics/escalations, runs/ID/graph, ...; the paths of
GET /api/...) as JSON; exits 2 when the service refuses it (its reason on standard error).

    taskmesh_client.py worker --handler NAME --server HOST:PORT [--function F] [--slots N] [--token-file F] [--tls | --ca-file CERT.pem]

serves the handler NAME from a Python function (FUNCTIONS below; default: the part of NAME after
its last dot, e.g. py.score -> score) until the connection ends or Ctrl+C. Needs the msgpack
package (Debian: python3-msgpack). With --tls or --ca-file the connection speaks TLS first (a
service with a certificate), checking the service's certificate against the system's roots or the
given one.
"""
import argparse
import concurrent.futures
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time

import msgpack

PROTOCOL_VERSION = 1
# Message types (docs/protocol.md).
ERROR, HELLO, WELCOME, DONE, PING, PONG = 0, 1, 2, 3, 4, 5
SUBMIT_GRAPH, RUN_SUBMITTED, GET_RUN, RUN = 10, 11, 14, 15
WORKER, WORKER_READY, LEASES, RESULTS = 30, 31, 33, 34
GET, RESOURCE = 36, 37


class ServiceError(Exception):
    """An error message: [status, title, detail, errors]."""

    def __init__(self, body):
        self.status, self.title, self.detail, self.errors = body
        super().__init__(f"{self.status} {self.title}: {self.detail}")


class Client:
    def __init__(self, host, port, token=None, timeout=None, tls=None):
        """tls: None for clear text, or an ssl.SSLContext (the service speaks TLS first when it has a certificate)."""
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=host)
        self.next_id = 1
        self.max_frame = 4 << 20
        self.send(HELLO, 0, [PROTOCOL_VERSION, token, "taskmesh_client.py"])
        kind, _, body = self.receive()
        if kind == ERROR:
            raise ServiceError(body)
        if kind != WELCOME:
            raise ConnectionError(f"expected a welcome, got message type {kind}")
        self.version, self.service_version, self.standing_run, self.role, self.max_frame = body

    def send(self, kind, request_id, body):
        payload = msgpack.packb([kind, request_id, body], use_bin_type=True)
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def _read_exactly(self, n):
        chunks = bytearray()
        while len(chunks) < n:
            chunk = self.sock.recv(n - len(chunks))
            if not chunk:
                raise ConnectionError("the service closed the connection")
            chunks += chunk
        return bytes(chunks)

    def receive(self):
        (length,) = struct.unpack(">I", self._read_exactly(4))
        if length == 0 or length > max(self.max_frame, 4 << 20):
            raise ConnectionError(f"a frame of {length} bytes")
        kind, request_id, body = msgpack.unpackb(self._read_exactly(length), raw=False)
        return kind, request_id, body

    def request(self, kind, body):
        """Sends one request and returns the answer's body (an error raises ServiceError)."""
        request_id = self.next_id
        self.next_id += 1
        self.send(kind, request_id, body)
        while True:
            answer, answered_id, answer_body = self.receive()
            if answered_id != request_id:
                continue  # an answer to another request (none are in flight here)
            if answer == ERROR:
                raise ServiceError(answer_body)
            return answer, answer_body

    def submit_graph(self, graph):
        _, body = self.request(SUBMIT_GRAPH, [graph])
        return body[0]

    def get_run(self, run_id, wait_seconds=0):
        _, body = self.request(GET_RUN, [run_id, wait_seconds])
        return body[0]

    def get(self, path, query=None):
        """A read by its path under /api (layers, metrics, runs/ID/graph, ...): the same document as HTTP's GET."""
        _, body = self.request(GET, [path, query])
        return body[0]

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------- a worker

def score(args):
    """The sum of the numbers among the arguments."""
    values = args.values() if isinstance(args, dict) else []
    return {"score": sum(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))}


def echo(args):
    return args


def nap(args):
    """Sleeps args["millis"] milliseconds; answers who did it."""
    time.sleep(float((args or {}).get("millis", 0)) / 1000.0)
    return {"pid": os.getpid()}


def fail(args):
    raise RuntimeError((args or {}).get("message", "failed on purpose"))


FUNCTIONS = {"score": score, "echo": echo, "sleep": nap, "fail": fail}


def serve_worker(client, handler, function, slots, log=None):
    """Declares the worker, then runs each lease it is granted and sends its result, until the connection ends."""
    client.send(WORKER, 1, [[handler], slots])
    kind, _, body = client.receive()
    if kind == ERROR:
        raise ServiceError(body)
    worker_id, lease_seconds = body
    print(json.dumps({"worker": worker_id, "handler": handler, "slots": slots}), flush=True)
    # Results must come, or a ping, at least every lease_seconds: a thread pings while tasks run.
    lock = threading.Lock()
    stop = threading.Event()

    def send(kind, body):
        with lock:
            client.send(kind, 0, body)

    def keep_alive():
        while not stop.wait(max(0.2, lease_seconds / 3.0)):
            try:
                send(PING, [])
            except OSError:
                return

    threading.Thread(target=keep_alive, daemon=True).start()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=slots)

    def run(lease_id, task_id, args):
        try:
            result = [lease_id, True, function(args), None]
        except Exception as e:  # the task failed: its error goes back
            result = [lease_id, False, f"{type(e).__name__}: {e}", None]
        try:
            if log:
                with lock, open(log, "a") as f:
                    f.write(f"{task_id} {os.getpid()}\n")
            send(RESULTS, [[result]])
        except OSError:
            pass

    try:
        while True:
            kind, _, body = client.receive()
            if kind == LEASES:
                for lease_id, task_id, _handler, args, _attempt in body[0]:
                    pool.submit(run, lease_id, task_id, args)
            elif kind == ERROR:
                raise ServiceError(body)
            # pongs need nothing
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)


def worker(args):
    name = args.function or args.handler.rsplit(".", 1)[-1]
    if name not in FUNCTIONS:
        raise SystemExit(f"no function {name!r}; known: {', '.join(sorted(FUNCTIONS))}")
    host, port = parse_server(args.server)
    client = Client(host, port, read_token(args), tls=tls_context(args))
    try:
        serve_worker(client, args.handler, FUNCTIONS[name], args.slots, args.log)
    except ConnectionError:
        return 0  # the service closed the connection
    finally:
        client.close()
    return 0


def tls_context(args):
    """--tls (the system's trusted roots) or --ca-file FILE (trust that certificate or CA): TLS first; else clear text."""
    if not args.tls and not args.ca_file:
        return None
    return ssl.create_default_context(cafile=args.ca_file)


def read_token(args):
    if args.token_file:
        with open(args.token_file) as f:
            return f.read().strip()
    return os.environ.get("TASKMESH_TOKEN")


def parse_server(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"--server must be HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def submit(args):
    with open(args.graph, encoding="utf-8") as f:
        # Sent as the file's JSON text (a map of the same shape would do too): the service's
        # errors then name the file's own lines.
        graph = f.read()
    host, port = parse_server(args.server)
    client = Client(host, port, read_token(args), tls=tls_context(args))
    try:
        try:
            run_id = client.submit_graph(graph)
        except ServiceError as e:
            print(f"taskmesh_client: {e.title}: {e.detail}", file=sys.stderr)
            for code, message, task_id, line, column in e.errors or []:
                where = f"{args.graph}:{line}" if line is not None else args.graph
                task = f" task '{task_id}':" if task_id is not None else ""
                print(f"{where}:{task} {message} [{code}]", file=sys.stderr)
            return 2
        if not args.wait:
            print(json.dumps({"run_id": run_id}))
            return 0
        run = client.get_run(run_id, 60)
        while run.get("status") in ("running", "open"):
            run = client.get_run(run_id, 60)
        print(json.dumps({"run_id": run["run_id"], "status": run["status"], "tasks": run["tasks"]}))
        return 0 if run["status"] == "succeeded" else 1
    finally:
        client.close()


def get(args):
    query = {}
    for item in args.query or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--query takes NAME=VALUE, got {item!r}")
        query[name] = value
    host, port = parse_server(args.server)
    client = Client(host, port, read_token(args), tls=tls_context(args))
    try:
        try:
            document = client.get(args.path, query or None)
        except ServiceError as e:
            print(f"taskmesh_client: {e.title}: {e.detail}", file=sys.stderr)
            return 2
        print(json.dumps(document))
        return 0
    finally:
        client.close()


def main():
    parser = argparse.ArgumentParser(description="A TaskMesh client over the socket protocol (docs/protocol.md).")
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("submit", help="submit a graph file")
    s.add_argument("graph", metavar="GRAPH.json")
    s.add_argument("--server", required=True, metavar="HOST:PORT")
    s.add_argument("--token-file", metavar="FILE")
    s.add_argument("--wait", action="store_true", help="wait for the run to end and print its final state")
    s.add_argument("--tls", action="store_true", help="speak TLS (the service has a certificate), trusting the system's roots")
    s.add_argument("--ca-file", metavar="FILE", help="speak TLS, trusting this certificate or CA (PEM)")
    w = commands.add_parser("worker", help="serve a handler from a Python function")
    w.add_argument("--handler", required=True, metavar="NAME")
    w.add_argument("--server", required=True, metavar="HOST:PORT")
    w.add_argument("--function", choices=sorted(FUNCTIONS), help="default: the handler's name after its last dot")
    w.add_argument("--slots", type=int, default=4, help="tasks run at once (default 4)")
    w.add_argument("--token-file", metavar="FILE")
    w.add_argument("--log", metavar="FILE", help="append 'TASK_ID PID' for each task run (before its result is sent)")
    w.add_argument("--tls", action="store_true", help="speak TLS (the service has a certificate), trusting the system's roots")
    w.add_argument("--ca-file", metavar="FILE", help="speak TLS, trusting this certificate or CA (PEM)")
    g = commands.add_parser("get", help="print a read of the service (the paths of GET /api/...) as JSON")
    g.add_argument("path", metavar="PATH", help="e.g. layers, metrics, metrics/escalations, runs/ID/graph, runs/ID/tasks")
    g.add_argument("--query", action="append", metavar="NAME=VALUE", help="a query parameter (days=7, limit=10, ...); repeatable")
    g.add_argument("--server", required=True, metavar="HOST:PORT")
    g.add_argument("--token-file", metavar="FILE")
    g.add_argument("--tls", action="store_true", help="speak TLS (the service has a certificate), trusting the system's roots")
    g.add_argument("--ca-file", metavar="FILE", help="speak TLS, trusting this certificate or CA (PEM)")
    args = parser.parse_args()
    try:
        sys.exit({"submit": submit, "worker": worker, "get": get}[args.command](args))
    except (ConnectionError, OSError) as e:
        print(f"taskmesh_client: {e}", file=sys.stderr)
        sys.exit(3)
    except ServiceError as e:
        print(f"taskmesh_client: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
