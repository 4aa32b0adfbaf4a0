// An example payload codec in the TS013 shape that TTN and ChirpStack use: a node sending temperature,
// humidity and battery in 5 bytes. sensorgate runs the examples beside it (test_decode_example-th.json,
// test_encode_example-th.json) before it uses the codec.
//
// Uplink, FPort 1: temperature int16 big-endian in 0.1 degC, humidity uint8 in %, battery uint16 in mV.
// Downlink, FPort 2: the reporting interval in seconds, uint16 big-endian.
function decodeUplink(input) {
  var b = input.bytes;
  if (input.fPort !== 1 || b.length !== 5) {
    return { errors: ["expected 5 bytes on FPort 1, got " + b.length + " on FPort " + input.fPort] };
  }
  var raw = (b[0] << 8) | b[1];
  if (raw & 0x8000) raw -= 0x10000;
  return {
    data: {
      temperature: raw / 10,
      humidity: b[2],
      battery_voltage: ((b[3] << 8) | b[4]) / 1000,
    },
  };
}

function encodeDownlink(input) {
  var seconds = input.data.interval;
  if (typeof seconds !== "number" || seconds < 10 || seconds > 65535) {
    return { errors: ["interval must be 10 to 65535 seconds"] };
  }
  return { fPort: 2, bytes: [(seconds >> 8) & 0xff, seconds & 0xff] };
}
