#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/seeds/TARGET/ (checked in; rerun
after changing this file). Seeds are small, well-formed starting points: a server's side of
whole sessions for `connection`, frames and tables for `frame` and `table`, URIs for `uri`,
the generator's small fixture specs for `codegen`. The fuzzer mutates them from there.

Frames are written by hand here (struct packing), so the seeds do not depend on the code
they test.
"""

import os
import shutil
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(ROOT, "seeds")


def shortstr(text):
    data = text.encode()
    return struct.pack(">B", len(data)) + data


def longstr(data):
    if isinstance(data, str):
        data = data.encode()
    return struct.pack(">I", len(data)) + data


def table(entries):
    """entries: list of (key, tag, encoded value bytes)."""
    body = b"".join(shortstr(k) + tag + v for k, tag, v in entries)
    return struct.pack(">I", len(body)) + body


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def method(channel, class_id, method_id, arguments=b""):
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + arguments)


def content(channel, body, properties=b"\x00\x00"):
    header = frame(2, channel, struct.pack(">HHQ", 60, 0, len(body)) + properties)
    return header + (frame(3, channel, body) if body else b"")


def heartbeat():
    return frame(8, 0, b"")


SERVER_PROPERTIES = table([
    ("product", b"S", longstr("RabbitMQ")),
    ("capabilities", b"F", table([
        ("publisher_confirms", b"t", b"\x01"),
        ("connection.blocked", b"t", b"\x01"),
    ])),
])


def handshake(frame_max=131072, heartbeat_secs=60):
    return (
        method(0, 10, 10, b"\x00\x09" + SERVER_PROPERTIES + longstr("PLAIN AMQPLAIN") + longstr("en_US"))
        + method(0, 10, 30, struct.pack(">HIH", 2047, frame_max, heartbeat_secs))
        + method(0, 10, 41, shortstr(""))
    )


def channel_open_ok(channel=1):
    return method(channel, 20, 11, longstr(""))


def deliver(tag, body, properties=b"\x00\x00", consumer="ctag"):
    return (
        method(1, 60, 60, shortstr(consumer) + struct.pack(">QB", tag, 0) + shortstr("") + shortstr("q"))
        + content(1, body, properties)
    )


HEADERS_PROPERTIES = b"\x20\x00" + table([("k", b"I", struct.pack(">i", 1)), ("L", b"L", struct.pack(">q", 5))])


def session():
    """A server's whole side of the fuzz target's script, in order."""
    return (
        handshake()
        + channel_open_ok()
        + method(1, 85, 11)  # confirm.select-ok
        + method(1, 60, 21, shortstr("ctag"))  # basic.consume-ok
        + method(1, 60, 50, struct.pack(">H", 312) + shortstr("NO_ROUTE") + shortstr("") + shortstr("q"))
        + content(1, b"body")  # the returned message
        + method(1, 60, 80, struct.pack(">QB", 1, 0))  # basic.ack 1
        + method(1, 50, 11, shortstr("q") + struct.pack(">II", 2, 1))  # queue.declare-ok
        + method(1, 60, 71, struct.pack(">QB", 1, 0) + shortstr("") + shortstr("q") + struct.pack(">I", 1))
        + content(1, b"got", HEADERS_PROPERTIES)  # basic.get-ok
        + deliver(2, b"first")
        + deliver(3, b"second" * 50, HEADERS_PROPERTIES)
        + heartbeat()
        + method(1, 20, 41)  # channel.close-ok
        + method(0, 10, 51)  # connection.close-ok
    )


CONNECTION = {
    "handshake": handshake(),
    "handshake_no_heartbeat_small_frames": handshake(frame_max=4096, heartbeat_secs=0),
    "session": session(),
    "session_blocked": handshake() + method(0, 10, 60, shortstr("low on memory")) + channel_open_ok()
    + method(0, 10, 61),
    "channel_closed_by_server": handshake() + channel_open_ok() + method(1, 20, 40, struct.pack(">H", 406)
    + shortstr("PRECONDITION_FAILED") + struct.pack(">HH", 85, 10)),
    "connection_closed_by_server": handshake() + method(0, 10, 50, struct.pack(">H", 320)
    + shortstr("CONNECTION_FORCED") + struct.pack(">HH", 0, 0)),
    "cancel_and_flow": handshake() + channel_open_ok() + method(1, 85, 11) + method(1, 60, 21, shortstr("ctag"))
    + method(1, 20, 20, b"\x00") + method(1, 60, 30, shortstr("ctag") + b"\x00") + method(1, 20, 20, b"\x01"),
    "nack_multiple": handshake() + channel_open_ok() + method(1, 85, 11) + method(1, 60, 21, shortstr("ctag"))
    + method(1, 60, 120, struct.pack(">QB", 0, 1)),
}

FRAME = {
    "session": session(),
    "heartbeat": heartbeat(),
}

TABLE = {
    "server_properties": SERVER_PROPERTIES,
    "every_tag": table([
        ("t", b"t", b"\x01"), ("b", b"b", b"\xfe"), ("B", b"B", b"\xfe"), ("s", b"s", b"\xff\xfd"),
        ("u", b"u", b"\xff\xfd"), ("U", b"U", b"\x00\x07"), ("I", b"I", b"\xff\xff\xff\xfc"),
        ("i", b"i", b"\x00\x00\x00\x04"), ("l", b"l", struct.pack(">q", -5)), ("L", b"L", struct.pack(">q", 5)),
        ("f", b"f", struct.pack(">f", 1.5)), ("d", b"d", struct.pack(">d", -2.25)), ("D", b"D", b"\x02\x00\x00\x30\x39"),
        ("S", b"S", longstr("hi")), ("A", b"A", longstr(b"b\x01V")), ("T", b"T", struct.pack(">Q", 1)),
        ("F", b"F", table([("k", b"t", b"\x00")])), ("V", b"V", b""), ("x", b"x", longstr(b"\x00\xff")),
    ]),
}

URI = {
    "plain": "amqp://guest:guest@localhost:5672/%2f",
    "tls_everything": "amqps://user:p%40ss@mq.example.com:5671/vhost?heartbeat=15&connection_timeout=500"
    "&frame_max=8192&channel_max=16&auth_mechanism=external&auth_mechanism=plain&connection_name=n"
    "&cacertfile=/ca.pem&certfile=/c.pem&keyfile=/k.pem&server_name_indication=mq&verify=verify_peer",
    "ipv6": "amqp://[::1]:5673",
    "bare": "amqp://",
    "empty_vhost": "amqp://h/",
}


def write(target, seeds):
    folder = os.path.join(SEEDS, target)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for name, data in seeds.items():
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(folder, name), "wb") as out:
            out.write(data)


def main():
    write("connection", CONNECTION)
    write("frame", FRAME)
    write("table", TABLE)
    write("uri", URI)
    fixtures = os.path.join(ROOT, "..", "codegen", "tests", "fixtures")
    specs = {}
    for name in sorted(os.listdir(fixtures)):
        if name.endswith(".xml"):
            with open(os.path.join(fixtures, name), "rb") as spec:
                specs[name] = spec.read()
    write("codegen", specs)


if __name__ == "__main__":
    main()
