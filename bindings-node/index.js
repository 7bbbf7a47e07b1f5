// DynamoKV for Node.js: a small facade over the native addon (src/lib.rs).
//
// The addon does the work (client-core in Rust: routing, retries, resolution, write-back,
// batches); this file gives it JavaScript idioms: keys as strings or Buffers, values as Buffers
// or strings (UTF-8), Promises, batch results as `{ ok, value | error }`, errors as
// `DynamoKVError` with a stable `code`, and a custom resolver's own error as the rejection.
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

const addon = loadAddon();
const { NativeClient } = addon;

/** The stable codes a DynamoKVError can carry. */
const ErrorCode = Object.freeze({
  INVALID_CONFIG: 'INVALID_CONFIG',
  EMPTY_KEY: 'EMPTY_KEY',
  KEY_TOO_LARGE: 'KEY_TOO_LARGE',
  VALUE_TOO_LARGE: 'VALUE_TOO_LARGE',
  INVALID_CONTEXT: 'INVALID_CONTEXT',
  INVALID_QUORUM: 'INVALID_QUORUM',
  MISSING_FIELD: 'MISSING_FIELD',
  INVALID_INPUT: 'INVALID_INPUT',
  QUORUM_NOT_REACHED: 'QUORUM_NOT_REACHED',
  OUTCOME_UNKNOWN: 'OUTCOME_UNKNOWN',
  SIBLING_LIMIT: 'SIBLING_LIMIT',
  UNAVAILABLE: 'UNAVAILABLE',
  OVERLOADED: 'OVERLOADED',
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  PERMISSION_DENIED: 'PERMISSION_DENIED',
  TLS: 'TLS',
  TIMEOUT: 'TIMEOUT',
  RESOLVER_FAILED: 'RESOLVER_FAILED',
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
  return fromPayload(e.message) ?? e;
}

// The DynamoKVError a JSON payload describes (a failed batch item's `error`), or undefined.
function fromPayload(json) {
  let payload;
  try {
    payload = JSON.parse(json);
  } catch {
    return undefined;
  }
  if (!payload || payload.dynamokvError !== true) return undefined;
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
  ['connectTimeoutMs', 'number'],
  ['requestTimeoutMs', 'number'],
  ['attemptTimeoutMs', 'number'],
  ['maxRetries', 'number'],
  ['maxKeyBytes', 'number'],
  ['maxValueBytes', 'number'],
  ['coordination', 'string'],
  ['ringRefreshIntervalMs', 'number'],
  ['hedgeAfterMs', 'number'],
  ['batchConcurrency', 'number'],
  ['tlsReloadIntervalMs', 'number'],
];

// ---- Resolvers -----------------------------------------------------------------------------

const BUILTIN = Symbol('dynamokv.builtinResolver');

/** A resolver built into the client core: it runs in Rust, with no JavaScript call. */
class BuiltinResolver {
  #name;

  constructor(token, name) {
    if (token !== BUILTIN) {
      throw new TypeError(
        'built-in resolvers are resolvers.lastWriterWins and resolvers.unionJson',
      );
    }
    this.#name = name;
    Object.freeze(this);
  }

  /** `'lastWriterWins'` or `'unionJson'`. */
  get name() {
    return this.#name;
  }

  toString() {
    return `resolvers.${this.#name}`;
  }
}

/**
 * The built-in resolvers. `lastWriterWins`: the value with the latest write timestamp (between
 * equal timestamps, the greatest bytes). `unionJson`: every value is a JSON array, the result
 * their union (each distinct element once): the paper's shopping cart, where nothing added is
 * lost. Either failing (e.g. a value that is not a JSON array) is a DynamoKVError
 * RESOLVER_FAILED, and nothing is written.
 */
const resolvers = Object.freeze({
  lastWriterWins: new BuiltinResolver(BUILTIN, 'lastWriterWins'),
  unionJson: new BuiltinResolver(BUILTIN, 'unionJson'),
});

// A thrown value as text, without risking a second throw (a getter, a null-prototype object).
function describeThrown(e) {
  try {
    if (e instanceof Error) return `${e.name}: ${e.message}`;
    return `the resolver threw ${typeof e === 'symbol' ? e.toString() : String(e)}`;
  } catch {
    return `the resolver threw a ${typeof e} that cannot be shown`;
  }
}

function describeValue(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return `an object (${v.constructor?.name ?? 'no prototype'})`;
  return `a ${typeof v}`;
}

/**
 * What the native call needs for `resolver`: the built-in's name, or a wrapper of the function
 * that the client core calls with a key's siblings. The wrapper always returns a Promise: of
 * the resolver's bytes, or rejected when the resolver threw, rejected or returned something
 * that is not bytes. In that case the client core writes nothing and fails the key with
 * RESOLVER_FAILED; `own(err, key)` then gives back what the resolver threw (or the TypeError
 * about its result), kept here per key, instead of that DynamoKVError.
 */
function resolverCall(resolver) {
  if (resolver instanceof BuiltinResolver) {
    return { builtin: resolver.name, custom: undefined, own: (err) => err };
  }
  if (typeof resolver !== 'function') {
    throw new TypeError(
      'resolver must be a function (values, meta) => Buffer | Promise<Buffer>, ' +
        `resolvers.lastWriterWins or resolvers.unionJson; got ${describeValue(resolver)}`,
    );
  }
  const kept = new Map(); // key (hex) -> what the resolver threw for it, in call order
  const keep = (key, e) => {
    const k = key.toString('hex');
    if (!kept.has(k)) kept.set(k, []);
    kept.get(k).push(e);
  };
  const custom = async ({ key, values, timestampsMs, tombstone }) => {
    let out;
    try {
      out = await resolver(values, { key, timestampsMs, tombstone });
    } catch (e) {
      keep(key, e);
      throw new Error(describeThrown(e));
    }
    if (!(out instanceof Uint8Array)) {
      const e = new TypeError(
        'the resolver must return a Buffer or Uint8Array (or a Promise of one), got ' +
          `${describeValue(out)}; nothing was written`,
      );
      keep(key, e);
      throw new Error(`TypeError: ${e.message}`);
    }
    return Buffer.isBuffer(out) ? out : Buffer.from(out.buffer, out.byteOffset, out.byteLength);
  };
  const own = (err, key) => {
    if (!(err instanceof DynamoKVError) || err.code !== ErrorCode.RESOLVER_FAILED) return err;
    const thrown = kept.get(key.toString('hex'));
    return thrown && thrown.length > 0 ? thrown.shift() : err;
  };
  return { builtin: undefined, custom, own };
}

function resolvedResult(r) {
  return {
    value: r.value ?? null,
    context: r.context,
    siblings: r.siblings,
    writtenBack: r.writtenBack,
  };
}

// The resolver option of a get; undefined when there is none.
function resolverOption(options) {
  const v = options == null ? undefined : options.resolver;
  return v === null ? undefined : v;
}

function keyList(keys) {
  if (!Array.isArray(keys)) throw new TypeError('keys must be an array of strings or Buffers');
  return keys.map((k, i) => bytes(`keys[${i}]`, k));
}

/** A DynamoKV client. Connections are made on first use; every method returns a Promise. */
class Client {
  #native;

  /**
   * @param {string[]} seeds nodes to contact, each "host:port"
   * @param {object} [options] connectTimeoutMs, requestTimeoutMs, attemptTimeoutMs, maxRetries,
   *   maxKeyBytes, maxValueBytes, coordination ('client' | 'server'), ringRefreshIntervalMs,
   *   hedgeAfterMs (null: off), batchConcurrency; for a cluster serving TLS, caCert (PEM text or
   *   path), clientCert and clientKey, or token, and tlsReloadIntervalMs; any left out take the
   *   client core's defaults
   */
  constructor(seeds, options = {}) {
    if (!Array.isArray(seeds) || !seeds.every((s) => typeof s === 'string')) {
      throw new TypeError('seeds must be an array of "host:port" strings');
    }
    const opts = {};
    for (const [name, type] of CLIENT_OPTIONS) {
      const v = option(options, name, type);
      if (v !== undefined) opts[name] = v;
    }
    const coordination = option(options, 'coordination', 'string');
    if (coordination !== undefined) opts.coordination = coordination;
    for (const name of ['caCert', 'clientCert', 'clientKey']) {
      const v = options == null ? undefined : options[name];
      if (v === undefined || v === null) continue;
      if (Buffer.isBuffer(v) || v instanceof Uint8Array) opts[name] = Buffer.from(v).toString('utf8');
      else if (typeof v === 'string') opts[name] = v;
      else throw new TypeError(`${name} must be PEM text (a string or Buffer) or a path, got ${typeof v}`);
    }
    const token = option(options, 'token', 'string');
    if (token !== undefined) opts.token = token;
    try {
      this.#native = new NativeClient(seeds, opts);
    } catch (e) {
      throw translate(e);
    }
  }

  /**
   * A client that has reached the cluster: it pulled the ring (client-driven) or heard from a
   * node (server-driven). Rejects when no node answers.
   */
  static async connect(seeds, options) {
    const client = new Client(seeds, options);
    await native(() => client.#native.connected());
    return client;
  }

  /**
   * Every concurrent value of `key`, their write times and one context covering them. With
   * `options.resolver`, the values resolved to one (written back unless `writeBack` is false).
   */
  async get(key, options) {
    const k = bytes('key', key);
    const r = option(options, 'r');
    const resolver = resolverOption(options);
    if (resolver === undefined) return native(() => this.#native.get(k, r));
    const writeBack = option(options, 'writeBack', 'boolean') ?? true;
    const call = resolverCall(resolver);
    try {
      return resolvedResult(
        await this.#native.getResolved(k, r, call.builtin, call.custom, writeBack),
      );
    } catch (e) {
      throw call.own(translate(e), k);
    }
  }

  /**
   * Many gets at once (at most `batchConcurrency` in flight): one `{ ok: true, value }` or
   * `{ ok: false, error }` per key, in order; one failing does not fail the others. Options as
   * for `get`.
   */
  async getMany(keys, options) {
    const ks = keyList(keys);
    const r = option(options, 'r');
    const resolver = resolverOption(options);
    if (resolver === undefined) {
      const items = await native(() => this.#native.getMany(ks, r));
      return items.map((item) => batchItem(item, (v) => v));
    }
    const writeBack = option(options, 'writeBack', 'boolean') ?? true;
    const call = resolverCall(resolver);
    const items = await native(() =>
      this.#native.getManyResolved(ks, r, call.builtin, call.custom, writeBack),
    );
    return items.map((item, i) => batchItem(item, resolvedResult, (e) => call.own(e, ks[i])));
  }

  /**
   * Many puts at once: `items` are `{ key, value, context? }`. One `{ ok: true, value: context }`
   * or `{ ok: false, error }` per item, in order. `options.w` and `options.syncReplicas` as for
   * `put` apply to every item; each item draws its own write id.
   */
  async putMany(items, options) {
    if (!Array.isArray(items)) {
      throw new TypeError('items must be an array of { key, value, context? }');
    }
    const converted = items.map((item, i) => {
      if (item === null || typeof item !== 'object') {
        throw new TypeError(
          `items[${i}] must be { key, value, context? }, got ${describeValue(item)}`,
        );
      }
      const c = context(item.context, false);
      const out = {
        key: bytes(`items[${i}].key`, item.key),
        value: bytes(`items[${i}].value`, item.value),
      };
      if (c !== undefined) out.context = c;
      return out;
    });
    const w = option(options, 'w');
    const sync = option(options, 'syncReplicas');
    const results = await native(() => this.#native.putMany(converted, w, sync));
    return results.map((item) => batchItem(item, (v) => v));
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

  /** The version of the ring the client routes by; null before its first pull. No I/O. */
  ringVersion() {
    return this.#native.ringVersion() ?? null;
  }

  /** Pulls the ring now; resolves to its version. */
  async refreshRing() {
    return native(() => this.#native.refreshRing());
  }

  /** Who coordinates this client's requests: `'client'` or `'server'`. No I/O. */
  coordination() {
    return this.#native.coordination();
  }

  /**
   * The client's own view of its seed nodes, one `{ address, up }` per seed in order: which
   * answer and which it avoids. Local state only: no I/O, so not a Promise.
   */
  nodeHealth() {
    return this.#native.nodeHealth();
  }
}

// A native batch item ({ value } or { error: payload }) as { ok, value } or { ok, error }.
function batchItem(item, value, own = (e) => e) {
  if (item.error !== undefined && item.error !== null) {
    return { ok: false, error: own(fromPayload(item.error) ?? new Error(item.error)) };
  }
  return { ok: true, value: value(item.value) };
}

// ---- Conformance helpers -------------------------------------------------------------------

function whole(name, v) {
  if (typeof v !== 'number') throw new TypeError(`${name} must be a number, got ${typeof v}`);
  return v;
}

function nativeSync(call) {
  try {
    return call();
  } catch (e) {
    throw translate(e);
  }
}

/**
 * What the client computes with the shared code, as pure functions (no I/O), for conformance
 * tests against `conformance/vectors.json`. Applications have no need of them.
 */
const inspect = Object.freeze({
  /** The key's ring position: its MD5 digest as a big-endian 128-bit integer. */
  keyPosition(key) {
    return BigInt(addon.inspectKeyPosition(bytes('key', key)));
  },
  /** The partition of `key` on a ring of `partitions` (a power of two, 1..=2^20). */
  partitionOf(key, partitions) {
    const k = bytes('key', key);
    return nativeSync(() => addon.inspectPartitionOf(k, whole('partitions', partitions)));
  },
  /**
   * The ids of `key`'s replicas (the partition's owner first) and fallbacks on the ring of
   * `members` (`{ id, address, zone?, weight? }`) with `partitions` partitions, `n` replicas.
   */
  preferenceList(members, partitions, key, n) {
    if (!Array.isArray(members)) throw new TypeError('members must be an array');
    const ms = members.map((m, i) => {
      if (m === null || typeof m !== 'object') {
        throw new TypeError(`members[${i}] must be an object`);
      }
      const zone = m.zone ?? '';
      const weight = m.weight ?? 1;
      if (typeof m.id !== 'string' || typeof m.address !== 'string' || typeof zone !== 'string') {
        throw new TypeError(`members[${i}]: id, address and zone must be strings`);
      }
      return { id: m.id, address: m.address, zone, weight: whole(`members[${i}].weight`, weight) };
    });
    const k = bytes('key', key);
    const list = nativeSync(() =>
      addon.inspectPreferenceList(ms, whole('partitions', partitions), k, whole('n', n)),
    );
    return { replicas: list.replicas, fallbacks: list.fallbacks };
  },
  /**
   * What a context (from a get or put of `key`) says: its clock and dot cloud as
   * `{ actor, counter }` BigInts, the write ids it saw (32 hex digits each) and the replica
   * that answered the read first (or null). Bytes that are not a context of `key` throw
   * DynamoKVError INVALID_CONTEXT.
   */
  describeContext(key, ctx) {
    const k = bytes('key', key);
    const c = context(ctx, true);
    const d = nativeSync(() => addon.inspectDescribeContext(k, c));
    const dots = (list) =>
      list.map((x) => ({ actor: BigInt(x.actor), counter: BigInt(x.counter) }));
    return {
      clock: dots(d.clock),
      cloud: dots(d.cloud),
      seenWrites: d.seenWrites,
      fastestReplica: d.fastestReplica ?? null,
    };
  },
});

module.exports = { Client, DynamoKVError, ErrorCode, resolvers, inspect };
