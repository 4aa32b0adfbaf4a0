// A small Node.js `Buffer` for the vendor codecs that use one (evaluated before the codec, see
// src/codec/engine.rs): Buffer.from(array | hex | base64 | text), Buffer.alloc, the integer and float
// readers and writers, slice/subarray, toString("hex" | "base64" | "utf8"). A Uint8Array underneath.
(function (global) {
  "use strict";
  if (typeof global.Buffer !== "undefined") return;
  var B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  function Buffer(size) { return Buffer.alloc(size); }
  function wrap(u8) { Object.setPrototypeOf(u8, Buffer.prototype); return u8; }
  Buffer.prototype = Object.create(Uint8Array.prototype);
  Buffer.prototype.constructor = Buffer;
  Buffer.alloc = function (size, fill) { var b = wrap(new Uint8Array(size)); if (fill) b.fill(fill); return b; };
  Buffer.isBuffer = function (value) { return value instanceof Buffer; };
  Buffer.from = function (value, encoding) {
    if (typeof value === "string") {
      var out = [];
      if (encoding === "hex") {
        for (var i = 0; i + 1 < value.length; i += 2) out.push(parseInt(value.substr(i, 2), 16));
      } else if (encoding === "base64") {
        var bits = 0, acc = 0;
        for (var j = 0; j < value.length; j++) {
          var v = B64.indexOf(value.charAt(j));
          if (v < 0) continue;
          acc = (acc << 6) | v; bits += 6;
          if (bits >= 8) { bits -= 8; out.push((acc >> bits) & 0xff); }
        }
      } else {
        var utf8 = unescape(encodeURIComponent(value));
        for (var k = 0; k < utf8.length; k++) out.push(utf8.charCodeAt(k));
      }
      return wrap(new Uint8Array(out));
    }
    return wrap(new Uint8Array(value));
  };
  var P = Buffer.prototype;
  function view(b) { return new DataView(b.buffer, b.byteOffset, b.byteLength); }
  P.readUInt8 = function (o) { return view(this).getUint8(o || 0); };
  P.readInt8 = function (o) { return view(this).getInt8(o || 0); };
  P.readUInt16BE = function (o) { return view(this).getUint16(o || 0, false); };
  P.readUInt16LE = function (o) { return view(this).getUint16(o || 0, true); };
  P.readInt16BE = function (o) { return view(this).getInt16(o || 0, false); };
  P.readInt16LE = function (o) { return view(this).getInt16(o || 0, true); };
  P.readUInt32BE = function (o) { return view(this).getUint32(o || 0, false); };
  P.readUInt32LE = function (o) { return view(this).getUint32(o || 0, true); };
  P.readInt32BE = function (o) { return view(this).getInt32(o || 0, false); };
  P.readInt32LE = function (o) { return view(this).getInt32(o || 0, true); };
  P.readFloatBE = function (o) { return view(this).getFloat32(o || 0, false); };
  P.readFloatLE = function (o) { return view(this).getFloat32(o || 0, true); };
  P.readDoubleBE = function (o) { return view(this).getFloat64(o || 0, false); };
  P.readDoubleLE = function (o) { return view(this).getFloat64(o || 0, true); };
  function writer(method, size, little) {
    return function (value, o) { o = o || 0; view(this)[method](o, value, little); return o + size; };
  }
  P.writeUInt8 = writer("setUint8", 1); P.writeInt8 = writer("setInt8", 1);
  P.writeUInt16BE = writer("setUint16", 2, false); P.writeUInt16LE = writer("setUint16", 2, true);
  P.writeInt16BE = writer("setInt16", 2, false); P.writeInt16LE = writer("setInt16", 2, true);
  P.writeUInt32BE = writer("setUint32", 4, false); P.writeUInt32LE = writer("setUint32", 4, true);
  P.writeInt32BE = writer("setInt32", 4, false); P.writeInt32LE = writer("setInt32", 4, true);
  P.writeFloatBE = writer("setFloat32", 4, false); P.writeFloatLE = writer("setFloat32", 4, true);
  P.writeDoubleBE = writer("setFloat64", 8, false); P.writeDoubleLE = writer("setFloat64", 8, true);
  P.readUint8 = P.readUInt8; P.readUint16BE = P.readUInt16BE; P.readUint16LE = P.readUInt16LE;
  P.readUint32BE = P.readUInt32BE; P.readUint32LE = P.readUInt32LE;
  P.slice = P.subarray = function (start, end) { return wrap(Uint8Array.prototype.subarray.call(this, start, end)); };
  P.toString = function (encoding) {
    var s = "", i;
    if (encoding === "hex") {
      for (i = 0; i < this.length; i++) s += (this[i] < 16 ? "0" : "") + this[i].toString(16);
      return s;
    }
    if (encoding === "base64") {
      for (i = 0; i < this.length; i += 3) {
        var n = (this[i] << 16) | ((this[i + 1] || 0) << 8) | (this[i + 2] || 0);
        s += B64.charAt(n >> 18) + B64.charAt((n >> 12) & 63) +
          (i + 1 < this.length ? B64.charAt((n >> 6) & 63) : "=") + (i + 2 < this.length ? B64.charAt(n & 63) : "=");
      }
      return s;
    }
    for (i = 0; i < this.length; i++) s += String.fromCharCode(this[i]);
    try { return decodeURIComponent(escape(s)); } catch (e) { return s; }
  };
  global.Buffer = Buffer;
})(globalThis);
