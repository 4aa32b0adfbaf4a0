// The gateway's side of the codec API, evaluated after the vendor's codec in the same context
// (src/codec/glue.rs). Each entry point takes and returns JSON text, so that the Rust side handles no
// JavaScript object. It picks the codec's API: TS013 decodeUplink/encodeDownlink/decodeDownlink, else the
// legacy ChirpStack v3 Decode(fPort, bytes, variables) / Encode(fPort, obj, variables), else TTN v2
// Decoder(bytes, port) / Encoder(obj, port); TTN's normalizeUplink runs on decoded data when present.
// Non-finite numbers (NaN, Infinity) in the output are errors: JSON cannot carry them.
(function (global) {
  "use strict";
  function nonFinite(value, path, found) {
    if (typeof value === "number" && !isFinite(value)) {
      found.push((path || "data") + " is " + String(value));
    } else if (value !== null && typeof value === "object") {
      for (var key in value) {
        if (Object.prototype.hasOwnProperty.call(value, key)) {
          nonFinite(value[key], path ? path + "." + key : key, found);
        }
      }
    }
    return found;
  }
  function texts(list) {
    if (list === undefined || list === null) return [];
    if (!Array.isArray(list)) return [String(list)];
    return list.map(function (item) { return String(item); });
  }
  function shape(result, what) {
    if (result === undefined || result === null || typeof result !== "object") {
      return { data: null, warnings: [], errors: [what + " returned " + String(result) + ", not an object"] };
    }
    return result;
  }
  function decodeWith(input, uplink) {
    var result;
    var name = uplink ? "decodeUplink" : "decodeDownlink";
    if (typeof global[name] === "function") {
      result = shape(global[name](input), name);
    } else if (uplink && typeof global.Decode === "function") {
      result = { data: global.Decode(input.fPort, input.bytes, input.variables) };
    } else if (uplink && typeof global.Decoder === "function") {
      result = { data: global.Decoder(input.bytes, input.fPort) };
    } else {
      return { data: null, warnings: [], errors: ["the codec has no " + name + (uplink ? ", Decode or Decoder" : "") + " function"] };
    }
    var errors = texts(result.errors);
    var warnings = texts(result.warnings);
    var data = result.data;
    if (errors.length === 0 && (data === undefined || data === null || typeof data !== "object" || Array.isArray(data))) {
      errors.push(name + " returned data " + (Array.isArray(data) ? "as an array" : String(data)) + ", not an object");
    }
    if (errors.length === 0) errors = nonFinite(data, "", []);
    var out = { data: errors.length === 0 ? data : null, warnings: warnings, errors: errors };
    if (uplink && errors.length === 0 && typeof global.normalizeUplink === "function") {
      var normalized = shape(global.normalizeUplink({ data: data }), "normalizeUplink");
      out.normalized = normalized.data === undefined ? null : normalized.data;
      out.warnings = out.warnings.concat(texts(normalized.warnings));
    }
    return out;
  }
  function input(json) {
    var parsed = JSON.parse(json);
    if (parsed.recvTime !== undefined && parsed.recvTime !== null) parsed.recvTime = new Date(parsed.recvTime);
    return parsed;
  }
  global.__sensorgateDecodeUplink = function (json) {
    return JSON.stringify(decodeWith(input(json), true));
  };
  global.__sensorgateDecodeDownlink = function (json) {
    return JSON.stringify(decodeWith(input(json), false));
  };
  global.__sensorgateEncodeDownlink = function (json) {
    var request = JSON.parse(json);
    var result;
    if (typeof global.encodeDownlink === "function") {
      result = shape(global.encodeDownlink(request), "encodeDownlink");
    } else if (typeof global.Encode === "function") {
      result = { bytes: global.Encode(request.fPort, request.data, request.variables) };
    } else if (typeof global.Encoder === "function") {
      result = { bytes: global.Encoder(request.data, request.fPort) };
    } else {
      result = { errors: ["the codec has no encodeDownlink, Encode or Encoder function"] };
    }
    var errors = texts(result.errors);
    var bytes = result.bytes;
    if (errors.length === 0) {
      var ok = bytes !== undefined && bytes !== null && typeof bytes.length === "number";
      for (var i = 0; ok && i < bytes.length; i++) {
        ok = typeof bytes[i] === "number" && bytes[i] === Math.floor(bytes[i]) && bytes[i] >= 0 && bytes[i] <= 255;
      }
      if (!ok) errors.push("encodeDownlink returned bytes " + String(bytes) + ", not an array of integers 0-255");
    }
    return JSON.stringify({
      bytes: errors.length === 0 ? Array.prototype.slice.call(bytes) : null,
      fPort: result.fPort === undefined ? request.fPort : result.fPort,
      warnings: texts(result.warnings),
      errors: errors,
    });
  };
})(globalThis);
