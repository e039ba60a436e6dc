// Drives dicomweb-client (the npm DICOMweb client, as OHIF and Slim use it)
// against one DICOMweb server, for tests/integration/test_dicomweb_client.py.
//
// usage: node run.js PLAN.json
//
// PLAN: {"url": DICOMweb base URL, "ops": [{"id": name, "method": a
// DICOMwebClient method, "options": its options object}, ...]}. The ops run
// one after the other, in order. For storeInstances, "options.files" (paths)
// is replaced by "options.datasets" (their bytes as ArrayBuffers).
//
// Prints one JSON object on stdout: {id: {"ok": true, "result": R} or
// {"ok": false, "error": message, "status": HTTP status}}. R is the method's
// answer with every binary value (ArrayBuffer, typed array) replaced by
// {"bytes": length, "sha256": hex digest}, and a JSON text parsed, so that
// the Python side can compare it with what it stored.
'use strict';

const fs = require('fs');
const crypto = require('crypto');

// dicomweb-client calls the browser's XMLHttpRequest; xhr2 is that API on
// Node's http module.
global.XMLHttpRequest = require('xhr2');
const DICOMwebClient = require('dicomweb-client');

function isBinary(v) {
  return v instanceof ArrayBuffer || ArrayBuffer.isView(v);
}

function digest(v) {
  const buf = v instanceof ArrayBuffer ? Buffer.from(v)
    : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  return {bytes: buf.length, sha256: crypto.createHash('sha256').update(buf).digest('hex')};
}

function plain(v) {
  if (isBinary(v)) return digest(v);
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === 'string') {
    try {
      return JSON.parse(v);
    } catch (e) {
      return v;
    }
  }
  if (v && typeof v === 'object') {
    const o = {};
    for (const k of Object.keys(v)) o[k] = plain(v[k]);
    return o;
  }
  return v === undefined ? null : v;
}

function arrayBufferOf(path) {
  const b = fs.readFileSync(path);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.length);
}

async function main() {
  if (process.argv.length !== 3) {
    process.stderr.write('usage: node run.js PLAN.json\n');
    process.exit(2);
  }
  const plan = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const client = new DICOMwebClient.api.DICOMwebClient({url: plan.url, verbose: false});
  const out = {};
  for (const op of plan.ops) {
    const options = Object.assign({}, op.options || {});
    if (options.files) {
      options.datasets = options.files.map(arrayBufferOf);
      delete options.files;
    }
    try {
      if (typeof client[op.method] !== 'function') throw new Error('no method ' + op.method);
      out[op.id] = {ok: true, result: plain(await client[op.method](options))};
    } catch (e) {
      out[op.id] = {ok: false, error: String(e && e.message || e), status: e && e.status || null};
    }
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack || e) + '\n');
  process.exit(1);
});
