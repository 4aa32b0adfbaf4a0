#!/usr/bin/env python3
"""The independent LoRaWAN end device of device.py (the same frame builders, `cryptography` only), heard
over the air of the daemon's simulated radio (`air = "127.0.0.1:PORT"`, src/source/radio/air.rs) instead
of through a packet forwarder. The radio is the daemon's own single-channel forwarder
(`payload = "lorawan"`).

Usage: radio_device.py, the scenario parameters as JSON on stdin ("air" and "port" UDP ports, keys,
EUIs). Prints one JSON report on stdout; every wait is bounded; exits 1 with a message on stderr when the
daemon does not answer as LoRaWAN says it must.

It joins over the air: the JoinAccept must come back on the air with inverted IQ (a device listens
inverted: a standard-IQ frame is not heard, so one is reported and skipped), and is decrypted, its MIC
checked and the session keys derived here. Then FCnt 0 (an LPP temperature on FPort 10, confirmed: its
ACK on the air says the server has it) is heard by the radio alone, and FCnt 1 by the radio (strong) and by gateway A, a Python packet forwarder on the LAN
(weak), within the dedup window.
"""

import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from device import (  # noqa: E402  (beside this file)
    GATEWAY_A, Gateway, fail, join_request, lpp_temperature, open_join_accept, session_keys, uplink,
)

WAIT = 8.0


class Air:
    """The simulated air of the daemon's radio."""

    def __init__(self, port):
        self.addr = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.pending = []

    def _recv(self, want, timeout):
        deadline = time.time() + timeout
        for i, message in enumerate(self.pending):
            if want in message:
                return self.pending.pop(i)
        while time.time() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                data, _ = self.sock.recvfrom(65535)
            except socket.timeout:
                break
            message = json.loads(data)
            if want in message:
                return message
            self.pending.append(message)
        return None

    def send(self, phy, rssi, snr):
        """Puts a frame on the air; returns the air's clock when the radio heard it."""
        self.sock.sendto(json.dumps({"data": phy.hex(), "rssi": rssi, "snr": snr}).encode(), self.addr)
        answer = self._recv("heard", WAIT)
        if answer is None or not answer["heard"]:
            fail("the radio did not hear the frame: %r" % answer)
        return answer["at_us"]

    def hear_inverted(self, timeout):
        """The next frame a device hears: inverted IQ only. Returns it and the standard ones skipped."""
        skipped = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            sent = self._recv("sent", max(0.01, deadline - time.time()))
            if sent is None:
                break
            if sent["iq"] == "inverted":
                return sent, skipped
            skipped.append(sent)
        return None, skipped


def main():
    params = json.loads(sys.stdin.read())
    report = {}
    air = Air(params["air"])
    app_key = bytes.fromhex(params["app_key"])
    dev_nonce = 0x0201
    heard_at = air.send(join_request(app_key, params["join_eui"], params["dev_eui"], dev_nonce), -70, 8.0)
    sent, skipped = air.hear_inverted(WAIT)
    report["not_inverted"] = len(skipped)
    if sent is None:
        fail("no JoinAccept with inverted IQ on the air")
    report["join_delay_us"] = sent["at_us"] - heard_at
    report["join_frequency"] = sent["frequency"]
    accept = open_join_accept(app_key, bytes.fromhex(sent["sent"]))
    nwk, app = session_keys(app_key, accept, dev_nonce)
    dev_addr = accept["dev_addr"]
    report["dev_addr"] = "%08x" % dev_addr
    # FCnt 0: the radio alone, confirmed, so that its ACK (inverted, in RX1 on the air) proves the network
    # server took it before FCnt 1 is sent: gateway A's copy of FCnt 1 reaches the server over the LAN
    # at once, and would otherwise overtake the radio's FCnt 0 on a loaded machine (FCnt 0 then a replay).
    air.send(uplink(nwk, app, dev_addr, 0, 10, lpp_temperature(19.5), confirmed=True), -70, 8.0)
    ack, _ = air.hear_inverted(WAIT)
    if ack is None:
        fail("no ACK of the confirmed FCnt 0 on the air")
    report["ack_fctrl"] = bytes.fromhex(ack["sent"])[5]
    # FCnt 1: gateway A (weak) and the radio (strong), within the dedup window.
    gateway = Gateway(GATEWAY_A, params["port"])
    gateway.pull()
    frame = uplink(nwk, app, dev_addr, 1, 10, lpp_temperature(20.5))
    gateway.push(frame, tmst=50_000_000, rssi=-110, lsnr=-2.0)
    air.send(frame, -60, 9.0)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
