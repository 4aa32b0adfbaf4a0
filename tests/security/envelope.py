#!/usr/bin/env python3
"""An independent receiver of sensorgate's end-to-end encrypted uplink payloads (docs/formats.md,
"End-to-end encrypted uplink payloads"), with the `cryptography` package, for tests/uplink/encrypted.rs.

    envelope.py KEYFILE < lines of "TOPIC HEX"      (e.g. the output of mosquitto_sub -F '%t %x')

prints, per line, "OK KEY_ID PAYLOADHEX" or "FAIL REASON". The topic is the associated data, so an
envelope decrypted under another topic than the one it was published on fails. Checks the format's test
vector first.
"""
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305


def open_envelope(key, topic, envelope):
    if len(envelope) < 30 or envelope[0] != 1:
        raise ValueError("not a version 1 envelope")
    return envelope[1], ChaCha20Poly1305(key).decrypt(envelope[2:14], envelope[14:], topic.encode())


def main():
    vector = bytes.fromhex(
        "0107000102030405060708090a0bf2d97c654467c032d6f74a81fd3f3451f85e879af40c7acc5591f2483f4d294a3d49829d")
    assert open_envelope(bytes(range(32)), "sites/garden/sensorgate/kitchen", vector) == (7, b'{"temperature":21.5}')
    key = bytes.fromhex("".join(open(sys.argv[1]).read().split()))
    for line in sys.stdin:
        fields = line.split()
        if len(fields) != 2:
            continue
        topic, envelope = fields
        try:
            key_id, payload = open_envelope(key, topic, bytes.fromhex(envelope))
            print(f"OK {key_id} {payload.hex()}")
        except (InvalidTag, ValueError) as error:
            print(f"FAIL {type(error).__name__}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
