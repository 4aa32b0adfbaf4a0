// The demo's codec (config/demo.toml, source "coded"): a node sending Cayenne LPP records, decoded the
// way vendors' codecs name things (TempC, Hum, BatV), with TTN's normalizeUplink saying what each is,
// so that Home Assistant gets temperature, humidity and voltage entities for names it does not know.
// sensorgate runs the examples in demo-node.yaml before it uses the codec.
//
// Uplink, any FPort: LPP records of channel, type, value: 103 temperature (int16 BE, 0.1 degC),
// 104 relative humidity (uint8, 0.5 %), 116 voltage (uint16 BE, 0.01 V).
function decodeUplink(input) {
  var b = input.bytes;
  var data = {};
  var i = 0;
  while (i + 2 <= b.length) {
    var type = b[i + 1];
    var at = i + 2;
    if (type === 103 && at + 2 <= b.length) {
      var raw = (b[at] << 8) | b[at + 1];
      if (raw & 0x8000) raw -= 0x10000;
      data.TempC = raw / 10;
      i = at + 2;
    } else if (type === 104 && at + 1 <= b.length) {
      data.Hum = b[at] / 2;
      i = at + 1;
    } else if (type === 116 && at + 2 <= b.length) {
      data.BatV = ((b[at] << 8) | b[at + 1]) / 100;
      i = at + 2;
    } else {
      return { errors: ["unknown or short LPP record of type " + type + " at byte " + i] };
    }
  }
  return { data: data };
}

function normalizeUplink(input) {
  return {
    data: {
      air: { temperature: input.data.TempC, relativeHumidity: input.data.Hum },
      battery: input.data.BatV,
    },
  };
}
