#!/usr/bin/env python3
"""Whether a broker that scripts/broker.sh started serves yet, asked in its
own protocol (a port that accepts connections is not enough: Kafka's kernel
backlog accepts long before the broker answers, and Redis answers LOADING
while it replays its AOF).

    ready.py redis PORT
    ready.py amqp PORT
    ready.py mqtt PORT
    ready.py kafka PORT
    ready.py jetstream PORT STREAM SUBJECT...

One attempt per call; broker.sh calls it again until it succeeds. Exit
status: 0 ready, 1 not yet, 2 never (the reason on stderr). For jetstream,
ready means the stream STREAM exists with exactly SUBJECT...: it is created,
or its subjects updated, here. Standard library only: each protocol needs
no more than a request or two.
"""

import json
import os
import socket
import struct
import sys

HOST = "127.0.0.1"
TIMEOUT = 3.0


class NotReady(Exception):
    """The broker does not answer yet; worth asking again."""


class Fatal(Exception):
    """The broker answered, but no retry will make it ready."""


def connect(port):
    try:
        return socket.create_connection((HOST, port), timeout=TIMEOUT)
    except OSError as e:
        raise NotReady(f"connect: {e}") from e


def read_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise NotReady("connection closed")
        data += chunk
    return data


def redis(port):
    with connect(port) as sock:
        sock.sendall(b"PING\r\n")
        reply = sock.recv(64)
    # "-LOADING ..." while the AOF is replayed.
    if not reply.startswith(b"+PONG"):
        raise NotReady(reply.decode(errors="replace").strip())


def amqp(port):
    """RabbitMQ answers the AMQP 0-9-1 header with Connection.Start, a
    method frame (type 1), once its listener is up: the last boot step."""
    with connect(port) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        frame_type = read_exactly(sock, 1)
    if frame_type != b"\x01":
        raise NotReady(f"unexpected AMQP reply {frame_type!r}")


def mqtt(port):
    """An MQTT 3.1.1 CONNECT with a clean session and an empty client id,
    which the broker must accept with CONNACK code 0; then DISCONNECT."""
    variable_header = b"\x00\x04MQTT\x04\x02\x00\x3c"
    payload = b"\x00\x00"
    body = variable_header + payload
    with connect(port) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        connack = read_exactly(sock, 4)
        sock.sendall(b"\xe0\x00")
    if connack[0] != 0x20 or connack[3] != 0:
        raise NotReady(f"CONNACK {connack.hex()}")


def kafka(port):
    """A Metadata request (v4, which Kafka 4 still serves) for no topics:
    ready once the answer lists this broker, that is once it has caught up
    with the metadata log and is unfenced (before that, it lists none)."""
    client_id = b"broker.sh"
    request = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id
    request += struct.pack(">ib", 0, 0)  # topics: [], allow_auto_topic_creation: false
    with connect(port) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", read_exactly(sock, 4))[0]
        response = read_exactly(sock, size)
    # correlation_id, throttle_time_ms, then the brokers array.
    offset = 8
    (count,) = struct.unpack_from(">i", response, offset)
    offset += 4
    ports = []
    for _ in range(count):
        _node_id, host_len = struct.unpack_from(">ih", response, offset)
        offset += 6 + host_len
        (broker_port, rack_len) = struct.unpack_from(">ih", response, offset)
        offset += 6 + max(rack_len, 0)
        ports.append(broker_port)
    if port not in ports:
        raise NotReady(f"metadata lists brokers on ports {ports}")


class Nats:
    """Just enough of the NATS text protocol for JetStream API requests."""

    def __init__(self, port):
        self.sock = connect(port)
        self.buffer = b""
        info = self.line()
        if not info.startswith(b"INFO "):
            raise NotReady(f"unexpected greeting {info[:40]!r}")
        if not json.loads(info[5:]).get("jetstream"):
            raise Fatal("nats-server runs without JetStream (-js)")
        connect_options = {"verbose": False, "pedantic": False, "lang": "broker.sh", "protocol": 1}
        # Each request its own reply subject, so a late answer to an
        # earlier request is never taken for the answer to this one.
        self.inbox = "_INBOX.broker_sh_" + os.urandom(8).hex()
        self.requests = 0
        self.sock.sendall(
            f"CONNECT {json.dumps(connect_options)}\r\nSUB {self.inbox}.* 1\r\nPING\r\n".encode()
        )
        while (reply := self.line()) != b"PONG":
            if reply.startswith(b"-ERR"):
                raise NotReady(reply.decode(errors="replace"))

    def line(self):
        while b"\r\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except OSError as e:
                raise NotReady(f"read: {e}") from e
            if not chunk:
                raise NotReady("connection closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def request(self, subject, body):
        payload = json.dumps(body).encode() if body is not None else b""
        self.requests += 1
        reply = f"{self.inbox}.{self.requests}"
        self.sock.sendall(
            f"PUB {subject} {reply} {len(payload)}\r\n".encode() + payload + b"\r\n"
        )
        while True:
            line = self.line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG "):
                fields = line.split()
                size = int(fields[-1])
                while len(self.buffer) < size + 2:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        raise NotReady("connection closed")
                    self.buffer += chunk
                data, self.buffer = self.buffer[:size], self.buffer[size + 2 :]
                if fields[1].decode() == reply:
                    return json.loads(data)
            elif line.startswith(b"-ERR"):
                raise NotReady(line.decode(errors="replace"))

    def close(self):
        self.sock.close()


def captures_replies(subject):
    """Whether a stream subject would also match the reply subjects
    JetStream itself uses: _INBOX.<id> (the deliver subject Dapr's consumers
    get, which nats-server 2.9.10 then refuses as "consumer deliver subject
    forms a cycle"), _INBOX.<id>.<n> (request replies) and $JS.API.<...>
    (the API, whose requests the stream would store and answer with a
    PubAck). Any subject whose first token is a wildcard does, except "*"."""
    first = subject.split(".", 1)[0]
    return first == ">" or (first == "*" and subject != "*")


def jetstream(port, stream, subjects):
    bad = [s for s in subjects if captures_replies(s)]
    if bad:
        raise Fatal(
            f"JetStream stream subjects {bad} would capture JetStream's own replies "
            "(_INBOX.>, $JS.API.>); use \"*\" for every one-token subject, and "
            "literal prefixes (orders.>) for topics with dots"
        )
    try:
        nats = Nats(port)
    except socket.timeout as e:
        raise NotReady("no answer") from e
    try:
        try:
            info = nats.request(f"$JS.API.STREAM.INFO.{stream}", None)
        except socket.timeout as e:
            raise NotReady("the JetStream API does not answer yet") from e
        error = info.get("error")
        if error and error.get("err_code") != 10059:  # 10059: stream not found
            raise NotReady(f"stream info: {error.get('description')}")
        if error:
            config = {
                "name": stream,
                "subjects": subjects,
                "storage": "file",
                # Limits: a message stays until the stream's limits drop
                # it (none are set), whoever acked it. Dapr's jetstream
                # component gives each topic an ephemeral consumer (a
                # durableName is one consumer for the whole component,
                # which a second topic cannot bind to), and the server
                # deletes one once daprd has let go of it (a
                # restart, or the app health check pausing it). On a
                # "workqueue" stream (a message leaves once acked), the
                # next consumer never got what the deleted one had not
                # acked: host-bridge down for 30 s lost 323 of 1,000. Here
                # nothing leaves, and the cost is the other way: a new
                # consumer starts at the stream's first message and
                # delivers every one again.
                "retention": "limits",
                "discard": "old",
                "num_replicas": 1,
                "max_msgs": -1,
                "max_bytes": -1,
                "max_age": 0,
                "max_consumers": -1,
                "max_msg_size": -1,
                # Deduplication by Nats-MsgId, which Dapr's component sets
                # to the CloudEvent id, spans every subject of the stream:
                # a dead letter, published with its original's id, is
                # dropped as a duplicate of the original if it comes within
                # the window. 100 ms, in nanoseconds, is the shortest the
                # server takes (0 means its default of two minutes); a DROP
                # answered faster than that still loses its dead letter.
                "duplicate_window": 100_000_000,
            }
            action, verb = "CREATE", "created"
        else:
            config = info["config"]
            if sorted(config.get("subjects", [])) == sorted(subjects):
                return
            config["subjects"] = subjects
            action, verb = "UPDATE", "updated"
        reply = nats.request(f"$JS.API.STREAM.{action}.{stream}", config)
        if reply.get("error"):
            raise Fatal(
                f"cannot {action.lower()} JetStream stream {stream} with subjects "
                f"{subjects}: {reply['error'].get('description')}"
            )
        print(f"broker.sh: {verb} JetStream stream {stream} with subjects {' '.join(subjects)}", flush=True)
    finally:
        nats.close()


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    kind, port = argv[1], int(argv[2])
    probes = {"redis": redis, "amqp": amqp, "mqtt": mqtt, "kafka": kafka}
    try:
        if kind == "jetstream":
            if len(argv) < 5:
                print("ready.py jetstream PORT STREAM SUBJECT...", file=sys.stderr)
                return 2
            jetstream(port, argv[3], argv[4:])
        elif kind in probes:
            try:
                probes[kind](port)
            except socket.timeout as e:
                raise NotReady("no answer") from e
        else:
            print(f"ready.py: unknown broker kind {kind!r}", file=sys.stderr)
            return 2
    except (NotReady, OSError, struct.error, ValueError):
        return 1
    except Fatal as e:
        print(f"broker.sh: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
