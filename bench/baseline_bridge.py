#!/usr/bin/env python3
"""The baseline sensorgate is measured against: a serial-to-MQTT bridge as a typical tutorial writes it.

It reads JSON lines from a serial port with pyserial and republishes each one with paho-mqtt to the
broker (Debian's mosquitto in the benchmark), on the topic sensors/<id>. One bridge serves one port.
It prints "ready" once it is connected to the broker and has opened the port, then runs until killed.

    /usr/bin/python3 bench/baseline_bridge.py --serial /dev/ttyUSB0 --broker-port 1883 --qos 0

Needs Debian's python3-serial and python3-paho-mqtt (paho-mqtt 1.x or 2.x).
"""

import argparse
import json
import sys
import threading

import paho.mqtt.client as mqtt
import serial


def make_client():
    # paho-mqtt 2.0 asks for the callback API version; 1.x (Debian 12) has no such argument.
    if hasattr(mqtt, "CallbackAPIVersion"):
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION1)
    return mqtt.Client()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serial", required=True, help="serial port to read")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--broker-port", type=int, default=1883)
    parser.add_argument("--qos", type=int, default=0, choices=(0, 1, 2))
    args = parser.parse_args()

    connected = threading.Event()

    def on_connect(client, userdata, flags, rc):
        if rc == 0:
            connected.set()

    client = make_client()
    client.on_connect = on_connect
    client.connect("127.0.0.1", args.broker_port, keepalive=60)
    client.loop_start()
    if not connected.wait(timeout=10):
        sys.exit("no CONNACK from the broker within 10 s")

    port = serial.Serial(args.serial, args.baud, timeout=1)
    print("ready", flush=True)

    while True:
        line = port.readline().decode("utf-8", errors="replace").strip()
        if not line:
            continue
        try:
            reading = json.loads(line)
        except ValueError:
            print("bad line:", line, file=sys.stderr)
            continue
        client.publish(f"sensors/{reading.get('id', 'unknown')}", line, qos=args.qos)


if __name__ == "__main__":
    main()
