#!/usr/bin/env python3
"""An independent node-side implementation of sensorgate's encrypted sensor frames (docs/formats.md,
"Encrypted sensor frames"), with the `cryptography` package (Debian: python3-cryptography), for
tests/sources/security_frames.rs. Reads one request per line on stdin and prints one frame per line as hex:

    KEYHEX ADDRESS SEQ COUNTER PAYLOADHEX [TAMPER]

The frame is the node16 header (address u16 BE, seq u8) | counter u32 LE | AES-128-CCM ciphertext | 4-byte
MIC, then the CRC-16/CCITT-FALSE trailer (big-endian) over all of it. TAMPER (header | ciphertext | tag)
flips one bit there after sealing, and the CRC is computed afterwards, so only the MIC can catch it.
"""
import binascii
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESCCM


def seal(key, address, seq, counter, payload, tamper=None):
    header = struct.pack(">HB", address, seq)
    nonce = b"SG" + b"\x00" + struct.pack(">I", address) + struct.pack(">I", counter) + b"\x00\x00"
    sealed = AESCCM(key, tag_length=4).encrypt(nonce, payload, header)
    frame = bytearray(header + struct.pack("<I", counter) + sealed)
    if tamper == "header":
        frame[2] ^= 0x01
    elif tamper == "ciphertext":
        frame[7] ^= 0x01
    elif tamper == "tag":
        frame[-1] ^= 0x01
    elif tamper is not None:
        raise SystemExit(f"unknown tamper {tamper}")
    crc = binascii.crc_hqx(bytes(frame), 0xFFFF)
    return bytes(frame) + struct.pack(">H", crc)


def main():
    # The format's test vector first (docs/formats.md): this implementation must agree with it before anything else.
    vector = seal(bytes(range(16)), 0x11, 7, 1, bytes.fromhex("036701100567 00FF".replace(" ", "")))
    assert vector[:-2].hex() == "001107010000000ebed6a866c9e61ebc43fa98", vector.hex()
    for line in sys.stdin:
        fields = line.split()
        if not fields:
            continue
        key, address, seq, counter, payload = fields[:5]
        tamper = fields[5] if len(fields) > 5 else None
        frame = seal(bytes.fromhex(key), int(address), int(seq), int(counter), bytes.fromhex(payload), tamper)
        print(frame.hex())


if __name__ == "__main__":
    main()
