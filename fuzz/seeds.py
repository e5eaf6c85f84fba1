#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into seeds/<target>/.

Seeds start the fuzzer from inputs that reach the interesting paths (a valid
UUID v4, a node tag, a valid signature made with the fuzzing key of
src/lib.rs); the fuzzer mutates from there. Run from fuzz/: python3 seeds.py
"""
import hashlib
import hmac
import os

NAME = b"WS_SESSION_ID"
KEY = b"fuzzing key, never used for real"
UUID = b"0b6d4b4e-5c1c-4c89-9b57-2c3f5a1d2e3f"
UUID2 = b"7f1e2d3c-4b5a-4968-8776-655443322110"


def sign(payload: bytes) -> bytes:
    tag = hmac.new(KEY, NAME + b"=" + payload, hashlib.sha256).digest()[:16]
    return payload + b"." + tag.hex().encode()


# Config byte bits (src/lib.rs Config::from_byte): 1 node, 2 signed, 4 any id, 8 on change.
NODE, SIGNED, ANY, ON_CHANGE = 1, 2, 4, 8

cookie_scan = {
    "plain": bytes([0]) + NAME + b"=" + UUID,
    "among_others": bytes([NODE]) + b"a=1; " + NAME + b"=" + UUID + b".here; b=2",
    "migrated": bytes([NODE]) + NAME + b"=" + UUID + b".other",
    "signed": bytes([NODE | SIGNED]) + NAME + b"=" + sign(UUID + b".here"),
    "signed_on_change": bytes([NODE | SIGNED | ON_CHANGE]) + NAME + b"=" + sign(UUID + b".here"),
    "any_id": bytes([ANY]) + NAME + b"=fuzz~generated_id!",
    "invalid_then_valid": bytes([0]) + NAME + b"=bad; " + NAME + b"=" + UUID + b"\nx=1",
    "two_fields": bytes([0]) + b"x=1\n" + NAME + b"=" + UUID2,
    "tabs": bytes([0]) + b"\t" + NAME + b"\t=\t" + UUID + b"\t;",
    "junk": bytes([0]) + b";;a;=v;" + NAME + b"=;\"q\";" + NAME + b"=\"" + UUID + b"\"",
}

value_codec = {
    "plain": bytes([0]) + UUID,
    "node": bytes([NODE]) + UUID + b".here",
    "other_node": bytes([NODE | ON_CHANGE]) + UUID + b".other",
    "signed": bytes([SIGNED]) + sign(UUID),
    "signed_node": bytes([NODE | SIGNED | ON_CHANGE]) + sign(UUID + b".here"),
    # A signing layer's value read by an unsigned one (signing turned off).
    "signed_node_unsigned_layer": bytes([NODE | ON_CHANGE]) + sign(UUID + b".here"),
    "any_id": bytes([ANY | NODE]) + b"abc!#$%&'()*+-/:<=>?@[]^_`{|}~.n1",
    "upper": bytes([0]) + UUID.upper(),
    "long": bytes([ANY]) + b"a" * 64,
}

# [method, version, flags, records...]; method 0 GET, 2 CONNECT; version 0
# HTTP/1.1, 1 HTTP/2; record first byte: 0 Connection, 1 Upgrade, 2 Cookie,
# 3 Origin, 4 Sec-WebSocket-Key, 5 Sec-WebSocket-Version, 6 other, 7 :protocol.
def rec(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + value


def req(method: int, version: int, flags: int, *records: bytes) -> bytes:
    return bytes([method, version, flags]) + b"\n".join(records)


handshake = [rec(0, b"keep-alive, Upgrade"), rec(1, b"websocket"), rec(4, b"dGhlIHNhbXBsZSBub25jZQ=="), rec(5, b"13")]
upgrade_detection = {
    "h1": req(0, 0, 0, *handshake),
    "h1_cookie_origin": req(0, 0, 1 | 2, *handshake, rec(2, NAME + b"=" + UUID), rec(3, b"https://app.example.com:443")),
    "h1_draining": req(0, 0, 4, *handshake),
    "h1_split_lists": req(0, 0, 0, rec(0, b"keep-alive"), rec(0, b" ,UPGRADE,"), rec(1, b"h2c, WebSocket/13")),
    "h1_app_cookie": req(0, 0, 3 << 4, *handshake),
    "h1_refused": req(0, 0, 2 << 4, *handshake),
    "extended_connect": req(2, 1, 0, rec(7, b"websocket"), rec(5, b"13")),
    "post": req(3, 0, 0, *handshake),
}

for target, seeds in [("cookie_scan", cookie_scan), ("value_codec", value_codec), ("upgrade_detection", upgrade_detection)]:
    os.makedirs(f"seeds/{target}", exist_ok=True)
    for name, data in seeds.items():
        with open(f"seeds/{target}/{name}", "wb") as f:
            f.write(data)
