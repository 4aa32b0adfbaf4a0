#!/usr/bin/env python3
"""An independent LoRaWAN 1.0.x end device behind Semtech UDP packet forwarders (protocol v2), for the
daemon tests: Python's `cryptography` (AES-CMAC, AES-ECB) only, no code shared with sensorgate.

Usage: device.py PHASE STATE_FILE, the scenario parameters as JSON on stdin (udp port, keys, EUIs).
Prints one JSON report on stdout. Every network wait is bounded (a few seconds); the script exits 1 with
a message on stderr when the daemon does not answer as LoRaWAN says it must.

PHASE "session": two gateways pull; the OTAA device joins (JoinAccept decrypted, MIC and keys checked),
sends an unconfirmed uplink heard by both gateways, a confirmed one (the ACK must come in RX1 of the best
gateway with tmst + 1 s; the forwarder answers TOO_LATE, so it comes again in RX2, 1 s later), a replay and a frame with a wrong MIC; the ABP device sends FCnt 65535 and
65536 (the 16-bit field rolls over); malformed datagrams and a gateway not allowed are sent; a
stranger's DevAddr is heard. The session is saved to STATE_FILE.
PHASE "resume": after the daemon restarted, the OTAA device continues its session (no new join).
PHASE "extra": after a reload added an ABP device, it sends; the OTAA device goes on once more.
PHASE "abp": the ABP device sends the frame counters listed in the parameters' "fcnts" (an LPP temperature
on FPort 2, or "payload_hex" on "fport" when given).
PHASE "downlink": the ABP device sends the uplinks of the parameters' "uplinks" (each {"fcnt", "ack"}, and
optionally "adr" (the FCtrl ADR bit), "fopts" (hex MAC commands), "datr", "lsnr" and its own "wait"), 0.3 s
apart past the receive window, through gateway A at tmst 1 000 000 x (i + 1); for each it reports the
downlink in its receive window, if one comes within "wait" seconds: its tmst, frequency, data rate and
IQ, the MIC checked with the NwkSKey, and the FRMPayload decrypted with the AppSKey, with FCntDown, FPort,
ACK bit, whether it is confirmed, and the LinkADRReqs of its FOpts as the device reads them. The forwarder answers each downlink's PULL_RESP with TX_ACK "NONE".
PHASE "joins": the OTAA device sends a join request with each DevNonce of the parameters' "nonces", 2.1 s
apart (past the join rate limit); the report lists which got a JoinAccept (decrypted, MIC checked).
"""

import base64
import json
import socket
import struct
import sys
import time

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

GATEWAY_A = bytes.fromhex("aa555a0000000001")
GATEWAY_B = bytes.fromhex("aa555a0000000002")
WAIT = 4.0


def fail(message):
    sys.stderr.write(message + "\n")
    sys.exit(1)


def aes_cmac(key, data):
    c = cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def aes_ecb_encrypt(key, data):
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def le(eui_hex):
    return bytes.fromhex(eui_hex)[::-1]


def join_request(app_key, join_eui, dev_eui, dev_nonce):
    body = b"\x00" + le(join_eui) + le(dev_eui) + struct.pack("<H", dev_nonce)
    return body + aes_cmac(app_key, body)[:4]


def open_join_accept(app_key, phy):
    """Decrypts a JoinAccept as a device does (AES encrypt of what the server decrypted) and checks its MIC."""
    if phy[0] != 0x20 or len(phy) not in (17, 33):
        fail("not a JoinAccept: %s" % phy.hex())
    plain = aes_ecb_encrypt(app_key, phy[1:])
    body, mic = b"\x20" + plain[:-4], plain[-4:]
    if aes_cmac(app_key, body)[:4] != mic:
        fail("JoinAccept MIC is wrong")
    return {
        "join_nonce": plain[0:3],
        "net_id": plain[3:6],
        "dev_addr": struct.unpack("<I", plain[6:10])[0],
        "dl_settings": plain[10],
        "rx_delay": plain[11],
        "cf_list": plain[12:28].hex() if len(plain) > 16 else "",
    }


def session_keys(app_key, accept, dev_nonce):
    tail = accept["join_nonce"] + accept["net_id"] + struct.pack("<H", dev_nonce) + b"\x00" * 7
    return aes_ecb_encrypt(app_key, b"\x01" + tail), aes_ecb_encrypt(app_key, b"\x02" + tail)


def crypt_frm(key, dev_addr, fcnt, direction, data):
    out = bytearray()
    for i in range(0, len(data), 16):
        block = b"\x01" + b"\x00" * 4 + bytes([direction]) + struct.pack("<II", dev_addr, fcnt) + b"\x00" + bytes([i // 16 + 1])
        stream = aes_ecb_encrypt(key, block)
        out += bytes(a ^ b for a, b in zip(data[i:i + 16], stream))
    return bytes(out)


def data_mic(nwk_s_key, dev_addr, fcnt, direction, msg):
    b0 = b"\x49" + b"\x00" * 4 + bytes([direction]) + struct.pack("<II", dev_addr, fcnt) + b"\x00" + bytes([len(msg)])
    return aes_cmac(nwk_s_key, b0 + msg)[:4]


def uplink(nwk_s_key, app_s_key, dev_addr, fcnt, fport, payload, confirmed=False, fopts=b"", ack=False, adr=False):
    mhdr = 0x80 if confirmed else 0x40
    fctrl = len(fopts) | (0x20 if ack else 0) | (0x80 if adr else 0)
    fhdr = struct.pack("<IBH", dev_addr, fctrl, fcnt & 0xFFFF) + fopts
    msg = bytes([mhdr]) + fhdr + bytes([fport]) + crypt_frm(app_s_key, dev_addr, fcnt, 0, payload)
    return msg + data_mic(nwk_s_key, dev_addr, fcnt, 0, msg)


class Gateway:
    def __init__(self, eui, port):
        self.eui = eui
        self.addr = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.token = 0

    def next_token(self):
        self.token = (self.token + 1) & 0xFFFF
        return struct.pack(">H", self.token)

    def recv(self, want, timeout=WAIT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                data, _ = self.sock.recvfrom(65535)
            except socket.timeout:
                break
            if len(data) >= 4 and data[0] == 2 and data[3] == want:
                return data
        return None

    def pull(self):
        token = self.next_token()
        self.sock.sendto(b"\x02" + token + b"\x02" + self.eui, self.addr)
        ack = self.recv(0x04)
        if ack is None or ack[1:3] != token:
            fail("no PULL_ACK for gateway %s" % self.eui.hex())

    def push(self, phy, tmst, rssi, lsnr=7.0, freq=868.1, datr="SF7BW125"):
        rxpk = {"tmst": tmst, "chan": 0, "rfch": 0, "freq": freq, "stat": 1, "modu": "LORA",
                "datr": datr, "codr": "4/5", "rssi": rssi, "lsnr": lsnr, "size": len(phy),
                "data": base64.b64encode(phy).decode()}
        token = self.next_token()
        body = json.dumps({"rxpk": [rxpk], "stat": {"rxnb": 1, "rxok": 1}}).encode()
        self.sock.sendto(b"\x02" + token + b"\x00" + self.eui + body, self.addr)
        ack = self.recv(0x01)
        if ack is None or ack[1:3] != token:
            fail("no PUSH_ACK for gateway %s" % self.eui.hex())

    def pull_resp(self, timeout=WAIT, error="NONE"):
        data = self.recv(0x03, timeout)
        if data is None:
            return None
        txpk = json.loads(data[4:])["txpk"]
        # TX_ACK: sent ("NONE"), or the forwarder's error.
        ack = json.dumps({"txpk_ack": {"error": error}}).encode()
        self.sock.sendto(b"\x02" + data[1:3] + b"\x05" + self.eui + ack, self.addr)
        return txpk


def lpp_temperature(celsius):
    return bytes([1, 0x67]) + struct.pack(">h", round(celsius * 10))


def session(params, state_path):
    report = {}
    a = Gateway(GATEWAY_A, params["port"])
    b = Gateway(GATEWAY_B, params["port"])
    a.pull()
    b.pull()
    app_key = bytes.fromhex(params["app_key"])
    # OTAA join through gateway A.
    dev_nonce = 0x0101
    a.push(join_request(app_key, params["join_eui"], params["dev_eui"], dev_nonce), tmst=1_000_000, rssi=-80)
    txpk = a.pull_resp()
    if txpk is None:
        fail("no JoinAccept")
    report["join_tmst"] = txpk["tmst"]
    report["join_ipol"] = txpk["ipol"]
    report["join_freq"] = txpk["freq"]
    accept = open_join_accept(app_key, base64.b64decode(txpk["data"]))
    nwk, app = session_keys(app_key, accept, dev_nonce)
    dev_addr = accept["dev_addr"]
    report["dev_addr"] = "%08x" % dev_addr
    report["cf_list"] = accept["cf_list"]
    # A replayed join request (same DevNonce) gets no JoinAccept.
    a.push(join_request(app_key, params["join_eui"], params["dev_eui"], dev_nonce), tmst=2_000_000, rssi=-80)
    report["replayed_join_answered"] = a.pull_resp(timeout=1.5) is not None
    # FCnt 0, unconfirmed, heard by A (weak) then B (strong) within the dedup window.
    frame = uplink(nwk, app, dev_addr, 0, 10, lpp_temperature(21.5))
    a.push(frame, tmst=10_000_000, rssi=-100, lsnr=1.0)
    b.push(frame, tmst=20_000_000, rssi=-50, lsnr=9.0)
    # FCnt 1, confirmed, with LinkCheckReq in FOpts: ACK in RX1 through B, 1 s after its tmst.
    time.sleep(0.3)  # the dedup window (200 ms) of FCnt 0 closes first, so readings stay in order
    frame = uplink(nwk, app, dev_addr, 1, 10, lpp_temperature(22.0), confirmed=True, fopts=b"\x02")
    b.push(frame, tmst=30_000_000, rssi=-55)
    # The forwarder cannot send in RX1 (TOO_LATE): the ACK comes again in RX2.
    rx1 = b.pull_resp(error="TOO_LATE")
    if rx1 is None:
        fail("no ACK for the confirmed uplink")
    report["ack_rx1_tmst"] = rx1["tmst"]
    txpk = b.pull_resp()
    if txpk is None:
        fail("no ACK in RX2 after TOO_LATE")
    report["ack_rx2_freq"] = txpk["freq"]
    report["ack_rx2_datr"] = txpk["datr"]
    if base64.b64decode(txpk["data"]) != base64.b64decode(rx1["data"]):
        fail("the RX2 downlink is not the RX1 frame")
    down = base64.b64decode(txpk["data"])
    msg, mic = down[:-4], down[-4:]
    down_fcnt = struct.unpack("<H", down[6:8])[0]
    if data_mic(nwk, dev_addr, down_fcnt, 1, msg) != mic:
        fail("downlink MIC is wrong")
    report["ack_tmst"] = txpk["tmst"]
    report["ack_bit"] = bool(down[5] & 0x20)
    report["ack_mtype"] = down[0] >> 5
    fopts_len = down[5] & 0x0F
    report["ack_fopts"] = down[8:8 + fopts_len].hex()
    report["ack_ipol"] = txpk["ipol"]
    # The same frame again (a replay), and one with a wrong MIC.
    time.sleep(0.3)
    b.push(frame, tmst=40_000_000, rssi=-55)
    bad = bytearray(uplink(nwk, app, dev_addr, 2, 10, lpp_temperature(99.0)))
    bad[-1] ^= 0xFF
    b.push(bytes(bad), tmst=50_000_000, rssi=-55)
    # The ABP device: FCnt 65535, then 65536 (the frame carries 0).
    abp_nwk, abp_app = bytes.fromhex(params["abp_nwk"]), bytes.fromhex(params["abp_app"])
    abp_addr = int(params["abp_dev_addr"], 16)
    a.push(uplink(abp_nwk, abp_app, abp_addr, 65535, 2, lpp_temperature(5.0)), tmst=60_000_000, rssi=-70)
    time.sleep(0.3)
    a.push(uplink(abp_nwk, abp_app, abp_addr, 65536, 2, lpp_temperature(6.5)), tmst=70_000_000, rssi=-70)
    # Hostile datagrams: not the protocol, bad JSON in a PUSH_DATA, and a gateway not allowed. None is
    # answered (no PUSH_ACK); the daemon goes on (the frames below are still taken).
    stranger = Gateway(bytes.fromhex("0102030405060708"), params["port"])
    stranger.sock.sendto(b"\x07garbage", stranger.addr)
    stranger.sock.sendto(b"\x02\x00\x01\x00" + GATEWAY_A + b"{not json", stranger.addr)
    stranger.sock.sendto(b"\x02\x00\x02\x02" + stranger.eui, stranger.addr)
    report["hostile_answered"] = stranger.recv(0x04, timeout=1.0) is not None
    # A stranger's frame (a DevAddr not configured).
    a.push(uplink(abp_nwk, abp_app, 0x0BADBEEF, 1, 2, lpp_temperature(1.0)), tmst=80_000_000, rssi=-70)
    with open(state_path, "w") as f:
        json.dump({"dev_addr": dev_addr, "nwk": nwk.hex(), "app": app.hex(), "fcnt": 2}, f)
    print(json.dumps(report))


def resume(params, state_path):
    with open(state_path) as f:
        saved = json.load(f)
    b = Gateway(GATEWAY_B, params["port"])
    b.pull()
    nwk, app = bytes.fromhex(saved["nwk"]), bytes.fromhex(saved["app"])
    frame = uplink(nwk, app, saved["dev_addr"], saved["fcnt"], 10, lpp_temperature(23.5), confirmed=True)
    b.push(frame, tmst=90_000_000, rssi=-60)
    txpk = b.pull_resp()
    print(json.dumps({"acked_after_restart": txpk is not None}))


def extra(params, state_path):
    """After a reload that added an ABP device: it is heard, and the OTAA session goes on."""
    with open(state_path) as f:
        saved = json.load(f)
    a = Gateway(GATEWAY_A, params["port"])
    a.pull()
    abp_nwk, abp_app = bytes.fromhex(params["abp_nwk"]), bytes.fromhex(params["abp_app"])
    a.push(uplink(abp_nwk, abp_app, int(params["extra_dev_addr"], 16), 1, 2, lpp_temperature(3.0)), tmst=100_000_000, rssi=-70)
    nwk, app = bytes.fromhex(saved["nwk"]), bytes.fromhex(saved["app"])
    frame = uplink(nwk, app, saved["dev_addr"], saved["fcnt"] + 1, 10, lpp_temperature(24.0), confirmed=True)
    a.push(frame, tmst=110_000_000, rssi=-60)
    print(json.dumps({"acked_after_reload": a.pull_resp() is not None}))


def abp(params, _state_path):
    """The ABP device sends the counters of params["fcnts"], 0.3 s apart (past the dedup window)."""
    a = Gateway(GATEWAY_A, params["port"])
    a.pull()
    abp_nwk, abp_app = bytes.fromhex(params["abp_nwk"]), bytes.fromhex(params["abp_app"])
    abp_addr = int(params["abp_dev_addr"], 16)
    fport = params.get("fport", 2)
    for i, fcnt in enumerate(params["fcnts"]):
        payload = bytes.fromhex(params["payload_hex"]) if "payload_hex" in params else lpp_temperature(fcnt / 10)
        a.push(uplink(abp_nwk, abp_app, abp_addr, fcnt, fport, payload), tmst=1_000_000 * (i + 1), rssi=-70)
        time.sleep(0.3)
    print(json.dumps({"sent": len(params["fcnts"])}))


# Downlink MAC commands (LoRaWAN 1.0.4): CID -> payload length.
DOWNLINK_MAC_LENGTHS = {0x02: 2, 0x03: 4, 0x04: 1, 0x05: 4, 0x06: 0, 0x07: 5, 0x08: 1, 0x09: 1, 0x0A: 4, 0x0D: 5}


def link_adr_requests(fopts):
    """The LinkADRReqs among a downlink's MAC commands, as the device reads them."""
    requests, i = [], 0
    while i < len(fopts):
        cid = fopts[i]
        if cid not in DOWNLINK_MAC_LENGTHS:
            fail("unknown downlink MAC command %02x in %s" % (cid, fopts.hex()))
        body = fopts[i + 1:i + 1 + DOWNLINK_MAC_LENGTHS[cid]]
        if cid == 0x03:
            requests.append({"data_rate": body[0] >> 4, "tx_power": body[0] & 0x0F,
                             "ch_mask": struct.unpack("<H", body[1:3])[0],
                             "ch_mask_cntl": (body[3] >> 4) & 0x07, "nb_trans": body[3] & 0x0F})
        i += 1 + DOWNLINK_MAC_LENGTHS[cid]
    return requests


def open_downlink(nwk_s_key, app_s_key, dev_addr, phy):
    """A data downlink as the device reads it: MIC with the NwkSKey, FRMPayload decrypted with the AppSKey."""
    mtype = phy[0] >> 5
    if mtype not in (3, 5):
        fail("not a data downlink: %s" % phy.hex())
    addr, fctrl, fcnt = struct.unpack("<IBH", phy[1:8])
    if addr != dev_addr:
        fail("downlink for DevAddr %08x" % addr)
    msg, mic = phy[:-4], phy[-4:]
    if data_mic(nwk_s_key, dev_addr, fcnt, 1, msg) != mic:
        fail("downlink MIC is wrong: %s" % phy.hex())
    fopts_end = 8 + (fctrl & 0x0F)
    out = {"fcnt_down": fcnt, "ack": bool(fctrl & 0x20), "confirmed": mtype == 5,
           "fopts": phy[8:fopts_end].hex(), "fport": None, "payload": "",
           "link_adr_req": link_adr_requests(phy[8:fopts_end])}
    if len(msg) > fopts_end:
        out["fport"] = msg[fopts_end]
        key = nwk_s_key if out["fport"] == 0 else app_s_key
        out["payload"] = crypt_frm(key, dev_addr, fcnt, 1, msg[fopts_end + 1:]).hex()
    return out


def downlink(params, _state_path):
    a = Gateway(GATEWAY_A, params["port"])
    a.pull()
    nwk, app = bytes.fromhex(params["abp_nwk"]), bytes.fromhex(params["abp_app"])
    addr = int(params["abp_dev_addr"], 16)
    windows = []
    for i, up in enumerate(params["uplinks"]):
        tmst = 1_000_000 * (i + 1)
        frame = uplink(nwk, app, addr, up["fcnt"], 2, lpp_temperature(up["fcnt"] / 10), ack=up.get("ack", False),
                       fopts=bytes.fromhex(up.get("fopts", "")), adr=up.get("adr", False))
        a.push(frame, tmst=tmst, rssi=-70, lsnr=up.get("lsnr", 7.0), datr=up.get("datr", "SF7BW125"))
        txpk = a.pull_resp(timeout=up.get("wait", params.get("wait", 1.5)))
        if txpk is None:
            windows.append(None)
            continue
        window = open_downlink(nwk, app, addr, base64.b64decode(txpk["data"]))
        window.update({"tmst": txpk["tmst"] - tmst, "freq": txpk["freq"], "datr": txpk["datr"],
                       "ipol": txpk["ipol"]})
        windows.append(window)
        time.sleep(0.3)
    print(json.dumps({"windows": windows}))


def joins(params, _state_path):
    a = Gateway(GATEWAY_A, params["port"])
    a.pull()
    app_key = bytes.fromhex(params["app_key"])
    answered = []
    for i, nonce in enumerate(params["nonces"]):
        if i:
            time.sleep(2.1)
        a.push(join_request(app_key, params["join_eui"], params["dev_eui"], nonce), tmst=1_000_000 * (i + 1), rssi=-80)
        txpk = a.pull_resp(timeout=1.5)
        if txpk is not None:
            open_join_accept(app_key, base64.b64decode(txpk["data"]))
        answered.append(txpk is not None)
    print(json.dumps({"answered": answered}))


def main():
    phase, state_path = sys.argv[1], sys.argv[2]
    params = json.loads(sys.stdin.read())
    if phase == "session":
        session(params, state_path)
    elif phase == "resume":
        resume(params, state_path)
    elif phase == "extra":
        extra(params, state_path)
    elif phase == "abp":
        abp(params, state_path)
    elif phase == "downlink":
        downlink(params, state_path)
    elif phase == "joins":
        joins(params, state_path)
    else:
        fail("unknown phase " + phase)


if __name__ == "__main__":
    main()
