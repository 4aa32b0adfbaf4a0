#!/usr/bin/env python3
"""An independent encoder of encrypted BLE sensor adverts, with the `cryptography` package (Debian:
python3-cryptography), for tests/cli/ble.rs. Written from bthome.io's encryption page (BTHome v2) and the
pvvx ATC_MiThermometer firmware's description of its encrypted custom format, not from sensorgate's code.
Reads one request per line on stdin and prints the service data, from its 16-bit UUID on, as hex:

    bthome  KEYHEX MAC COUNTER PLAINHEX [trigger]
    pvvx    KEYHEX MAC COUNT   PLAINHEX
    atc1441 KEYHEX MAC COUNT   PLAINHEX

BTHome v2: UUID d2 fc, the device information byte 0x41 (0x45 trigger-based), the AES-128-CCM ciphertext,
the counter u32 LE, the 4-byte MIC; nonce MAC (as written) | d2 fc | device information | counter LE; no
associated data. pvvx and atc1441 (the same sealing, 6 and 3 bytes of plaintext): UUID 1a 18, the
measurement count, the ciphertext, the 4-byte MIC; nonce MAC (least significant byte first) | AD length |
16 1a 18 | count; associated data 11.
"""
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESCCM


def bthome(key, mac, counter, plain, trigger=False):
    info = 0x45 if trigger else 0x41
    count = struct.pack("<I", counter)
    nonce = mac + b"\xd2\xfc" + bytes([info]) + count
    sealed = AESCCM(key, tag_length=4).encrypt(nonce, plain, None)
    return b"\xd2\xfc" + bytes([info]) + sealed[:-4] + count + sealed[-4:]


def pvvx(key, mac, count, plain):
    service_data_len = 1 + len(plain) + 4
    ad_len = 3 + service_data_len
    nonce = mac[::-1] + bytes([ad_len, 0x16, 0x1A, 0x18, count])
    sealed = AESCCM(key, tag_length=4).encrypt(nonce, plain, b"\x11")
    return b"\x1a\x18" + bytes([count]) + sealed


def main():
    # The published examples first: this encoder must agree with them before anything else.
    io_key = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
    io_mac = bytes.fromhex("5448E68F80A5")
    example = bthome(io_key, io_mac, 0x33221100, bytes.fromhex("02ca0903bf13"))
    assert example.hex() == "d2fc41a47266c95f730011223378237214", example.hex()
    # ble_monitor's encrypted pvvx advert (test_atc_custom_encrypted): its plaintext is 23.45 °C, 41.73 %,
    # 61 %, then the flags; sealing that plaintext again must give the same bytes.
    monitor_key = bytes.fromhex("b9ea895fac7eea6d30532432a516f3a3")
    monitor_mac = bytes.fromhex("A4C1388D18B2")
    monitor = bytes.fromhex("1a1811d603fbfa7b6dfb1e26fd")
    nonce = monitor_mac[::-1] + bytes([0x0E, 0x16, 0x1A, 0x18, 0x11])
    opened = AESCCM(monitor_key, tag_length=4).decrypt(nonce, monitor[3:], b"\x11")
    temperature, humidity, battery, _flags = struct.unpack("<hHBB", opened)
    assert (temperature, humidity, battery) == (2345, 4173, 61), opened.hex()
    assert pvvx(monitor_key, monitor_mac, 0x11, opened) == monitor
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        kind, key, mac, counter, plain = words[:5]
        key, mac, plain = bytes.fromhex(key), bytes.fromhex(mac.replace(":", "")), bytes.fromhex(plain)
        if kind == "bthome":
            out = bthome(key, mac, int(counter), plain, trigger=words[5:] == ["trigger"])
        elif kind in ("pvvx", "atc1441"):
            out = pvvx(key, mac, int(counter), plain)
        else:
            raise SystemExit(f"unknown format {kind}")
        print(out.hex())


if __name__ == "__main__":
    main()
