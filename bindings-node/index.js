// DynamoKV for Node.js: a small facade over the native addon (src/lib.rs).
//
// The addon does the work (client-core in Rust); this file gives it JavaScript idioms: keys as
// strings or Buffers, values as Buffers or strings (UTF-8), Promises, and errors as
// `DynamoKVError` with a stable `code`.
'use strict';

const path = require('node:path');

const ADDON = path.join(__dirname, 'dynamokv.node');

function loadAddon() {
  try {
    return require(ADDON);
  } catch (e) {
    if (e && e.code === 'MODULE_NOT_FOUND') {
      throw new Error(
        `dynamokv: the native addon ${ADDON} is missing; run \`npm install\` in the package ` +
          'directory (its install script builds it with cargo)',
        { cause: e },
      );
    }
    throw e;
  }
}

const { NativeClient } = loadAddon();

/** The stable codes a DynamoKVError can carry. */
const ErrorCode = Object.freeze({
  INVALID_CONFIG: 'INVALID_CONFIG',
  EMPTY_KEY: 'EMPTY_KEY',
  KEY_TOO_LARGE: 'KEY_TOO_LARGE',
  VALUE_TOO_LARGE: 'VALUE_TOO_LARGE',
  INVALID_CONTEXT: 'INVALID_CONTEXT',
  INVALID_QUORUM: 'INVALID_QUORUM',
  MISSING_FIELD: 'MISSING_FIELD',
  QUORUM_NOT_REACHED: 'QUORUM_NOT_REACHED',
  OUTCOME_UNKNOWN: 'OUTCOME_UNKNOWN',
  SIBLING_LIMIT: 'SIBLING_LIMIT',
  UNAVAILABLE: 'UNAVAILABLE',
  TIMEOUT: 'TIMEOUT',
  INTERNAL: 'INTERNAL',
});

/** Every failure of a DynamoKV call: `code` says which, the fields say how much. */
class DynamoKVError extends Error {
  constructor(code, message, fields = {}, options) {
    super(message, options);
    this.name = 'DynamoKVError';
    this.code = code;
    for (const field of ['size', 'max', 'needed', 'got', 'afterMs', 'writeId']) {
      if (fields[field] !== undefined) this[field] = fields[field];
    }
  }
}

// The native layer sends code and fields as JSON in the message (see src/error.rs).
function translate(e) {
  if (!(e instanceof Error)) return e;
  let payload;
  try {
    payload = JSON.parse(e.message);
  } catch {
    return e;
  }
  if (!payload || payload.dynamokvError !== true) return e;
  return new DynamoKVError(payload.code, payload.message, payload);
}

async function native(call) {
  try {
    return await call();
  } catch (e) {
    throw translate(e);
  }
}

function bytes(name, v) {
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  throw new TypeError(`${name} must be a string, Buffer or Uint8Array, got ${typeof v}`);
}

function context(v, required) {
  if (v === undefined || v === null) {
    if (required) throw new TypeError('context must be the Buffer of an earlier get');
    return undefined;
  }
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return bytes('context', v);
  throw new TypeError(`context must be a Buffer, got ${typeof v}`);
}

function option(options, name, type = 'number') {
  const v = options == null ? undefined : options[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== type) throw new TypeError(`${name} must be a ${type}, got ${typeof v}`);
  return v;
}

const CLIENT_OPTIONS = [
  'connectTimeoutMs',
  'requestTimeoutMs',
  'attemptTimeoutMs',
  'maxRetries',
  'maxKeyBytes',
  'maxValueBytes',
];

/** A DynamoKV client. Connections are made on first use; every method returns a Promise. */
class Client {
  #native;

  /**
   * @param {string[]} seeds nodes to contact, each "host:port"
   * @param {object} [options] connectTimeoutMs, requestTimeoutMs, attemptTimeoutMs, maxRetries,
   *   maxKeyBytes, maxValueBytes, coordination ("client" or "server"); any left out take the
   *   client core's defaults
   */
  constructor(seeds, options = {}) {
    if (!Array.isArray(seeds) || !seeds.every((s) => typeof s === 'string')) {
      throw new TypeError('seeds must be an array of "host:port" strings');
    }
    const opts = {};
    for (const name of CLIENT_OPTIONS) {
      const v = option(options, name);
      if (v !== undefined) opts[name] = v;
    }
    const coordination = option(options, 'coordination', 'string');
    if (coordination !== undefined) opts.coordination = coordination;
    try {
      this.#native = new NativeClient(seeds, opts);
    } catch (e) {
      throw translate(e);
    }
  }

  /** Every concurrent value of `key` and one context covering them. */
  async get(key, options) {
    const k = bytes('key', key);
    const r = option(options, 'r');
    return native(() => this.#native.get(k, r));
  }

  /**
   * Writes `value`; with the context of a get it supersedes what that get saw. `options.w` is
   * the write quorum; `options.writeId` (32 hex digits) retries the write an OUTCOME_UNKNOWN
   * error named (`{ writeId: err.writeId }`): one write id is applied at most once;
   * `options.syncReplicas` (0..=W) is how many of the W acknowledging replicas fsync before the
   * write is acknowledged (left out: the cluster's `sync_replicas`).
   */
  async put(key, value, ctx, options) {
    const k = bytes('key', key);
    const v = bytes('value', value);
    const c = context(ctx, false);
    const w = option(options, 'w');
    const id = option(options, 'writeId', 'string');
    const sync = option(options, 'syncReplicas');
    return native(() => this.#native.put(k, v, c, w, id, sync));
  }

  /** Deletes what the context of a get saw of `key`; `options` as for `put`. */
  async delete(key, ctx, options) {
    const k = bytes('key', key);
    const c = context(ctx, true);
    const w = option(options, 'w');
    const id = option(options, 'writeId', 'string');
    const sync = option(options, 'syncReplicas');
    return native(() => this.#native.delete(k, c, w, id, sync));
  }

  /** The cluster's membership and settings, as one node reports them. */
  async clusterInfo() {
    return native(() => this.#native.clusterInfo());
  }

  /**
   * The client's own view of its seed nodes, one `{ address, up }` per seed in order: which
   * answer and which it avoids. Local state only: no I/O, so not a Promise.
   */
  nodeHealth() {
    return this.#native.nodeHealth();
  }
}

module.exports = { Client, DynamoKVError, ErrorCode };
