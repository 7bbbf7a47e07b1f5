// Every class of bad input is refused with its DynamoKVError code and changes nothing; client
// configuration errors and unreachable nodes have their own codes.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { Client, DynamoKVError, ErrorCode } = require('..');
const { startNode } = require('../test-support/node');

const MAX_KEY = 4096;
const MAX_VALUE = 1024 * 1024;

let node;
let client; // default (client-core) limits: refuses oversized input before sending
let loose; // larger client-side limits, so the server's own checks are exercised
let counter = 0;
const freshKey = (name) => `errors:${name}:${process.pid}:${++counter}`;
const strings = (values) => values.map((v) => v.toString('utf8'));

before(async () => {
  node = await startNode();
  client = new Client([node.address]);
  loose = new Client([node.address], { maxKeyBytes: 4 * MAX_KEY, maxValueBytes: 4 * MAX_VALUE });
});

after(async () => {
  await node?.stop();
});

/** Asserts that `promise` rejects with a DynamoKVError of `code` (and `fields`); returns it. */
async function rejectsWith(promise, code, fields = {}) {
  let caught;
  await assert.rejects(promise, (e) => {
    caught = e;
    return true;
  });
  assert.ok(caught instanceof DynamoKVError, `expected a DynamoKVError, got ${caught}`);
  assert.ok(caught instanceof Error);
  assert.equal(caught.name, 'DynamoKVError');
  assert.equal(caught.code, code, caught.message);
  assert.equal(typeof caught.message, 'string');
  assert.ok(caught.message.length > 0);
  for (const [name, value] of Object.entries(fields)) assert.equal(caught[name], value, name);
  return caught;
}

function throwsWith(fn, code) {
  assert.throws(fn, (e) => e instanceof DynamoKVError && e.code === code);
}

/** A key holding a known value, and a check that it still holds exactly that. */
async function seeded(name) {
  const key = freshKey(name);
  await client.put(key, 'original');
  const before = await client.get(key);
  return {
    key,
    context: before.context,
    async unchanged() {
      const now = await client.get(key);
      assert.deepEqual(strings(now.values), ['original']);
      assert.deepEqual(now.context, before.context);
    },
  };
}

test('the error codes are the documented set', () => {
  assert.deepEqual(Object.keys(ErrorCode).sort(), [
    'EMPTY_KEY',
    'INTERNAL',
    'INVALID_CONFIG',
    'INVALID_CONTEXT',
    'INVALID_INPUT',
    'INVALID_QUORUM',
    'KEY_TOO_LARGE',
    'MISSING_FIELD',
    'OUTCOME_UNKNOWN',
    'OVERLOADED',
    'PERMISSION_DENIED',
    'QUORUM_NOT_REACHED',
    'RESOLVER_FAILED',
    'SIBLING_LIMIT',
    'TIMEOUT',
    'TLS',
    'UNAUTHENTICATED',
    'UNAVAILABLE',
    'VALUE_TOO_LARGE',
  ]);
});

test('an empty key is EMPTY_KEY', async () => {
  const s = await seeded('empty-key');
  for (const c of [client, loose]) {
    await rejectsWith(c.get(''), 'EMPTY_KEY', { max: c === client ? MAX_KEY : 4 * MAX_KEY });
    await rejectsWith(c.put('', 'x'), 'EMPTY_KEY');
    await rejectsWith(c.put(Buffer.alloc(0), 'x', s.context), 'EMPTY_KEY');
    await rejectsWith(c.delete('', s.context), 'EMPTY_KEY');
  }
  await s.unchanged();
});

test('a key over 4096 bytes is KEY_TOO_LARGE, on the client and on the server', async () => {
  const s = await seeded('long-key');
  const long = 'k'.repeat(MAX_KEY + 1);
  await rejectsWith(client.put(long, 'x'), 'KEY_TOO_LARGE', { size: MAX_KEY + 1, max: MAX_KEY });
  await rejectsWith(client.get(long), 'KEY_TOO_LARGE', { size: MAX_KEY + 1, max: MAX_KEY });
  await rejectsWith(client.delete(long, s.context), 'KEY_TOO_LARGE');
  // The client lets it through; the server refuses it with the same error and its own limit.
  await rejectsWith(loose.put(long, 'x'), 'KEY_TOO_LARGE', { size: MAX_KEY + 1, max: MAX_KEY });
  await rejectsWith(loose.get(long), 'KEY_TOO_LARGE', { size: MAX_KEY + 1, max: MAX_KEY });
  await rejectsWith(loose.delete(long, s.context), 'KEY_TOO_LARGE');
  // A key of exactly the limit is fine.
  const edge = freshKey('edge').padEnd(MAX_KEY, 'e');
  assert.equal(Buffer.byteLength(edge), MAX_KEY);
  await client.put(edge, 'ok');
  assert.deepEqual(strings((await client.get(edge)).values), ['ok']);
  await s.unchanged();
});

test('a value over 1 MiB is VALUE_TOO_LARGE, on the client and on the server', async () => {
  const s = await seeded('big-value');
  const big = Buffer.alloc(MAX_VALUE + 1, 1);
  await rejectsWith(client.put(s.key, big, s.context), 'VALUE_TOO_LARGE', {
    size: MAX_VALUE + 1,
    max: MAX_VALUE,
  });
  await rejectsWith(loose.put(s.key, big, s.context), 'VALUE_TOO_LARGE', {
    size: MAX_VALUE + 1,
    max: MAX_VALUE,
  });
  await rejectsWith(loose.put(s.key, big), 'VALUE_TOO_LARGE');
  await s.unchanged();
});

test('a context that does not decode is INVALID_CONTEXT', async () => {
  const s = await seeded('garbage-context');
  const garbage = Buffer.from('garbage');
  await rejectsWith(client.put(s.key, 'x', garbage), 'INVALID_CONTEXT');
  await rejectsWith(client.delete(s.key, garbage), 'INVALID_CONTEXT');
  // A real context with one byte changed.
  const edited = Buffer.from(s.context);
  edited[edited.length - 1] ^= 0xff;
  await rejectsWith(client.put(s.key, 'x', edited), 'INVALID_CONTEXT');
  await s.unchanged();
});

test("another key's context is INVALID_CONTEXT", async () => {
  const s = await seeded('foreign-context');
  const other = freshKey('other');
  await client.put(other, 'theirs');
  const foreign = (await client.get(other)).context;
  const e = await rejectsWith(client.put(s.key, 'x', foreign), 'INVALID_CONTEXT');
  assert.match(e.message, /another key/);
  await rejectsWith(client.delete(s.key, foreign), 'INVALID_CONTEXT');
  await s.unchanged();
  assert.deepEqual(strings((await client.get(other)).values), ['theirs']);
});

test('a quorum outside 1..=N is INVALID_QUORUM, on the client and on the server', async () => {
  const s = await seeded('quorum');
  // Refused by the client core before sending.
  await rejectsWith(client.get(s.key, { r: 0 }), 'INVALID_QUORUM');
  await rejectsWith(client.put(s.key, 'x', s.context, { w: 0 }), 'INVALID_QUORUM');
  await rejectsWith(client.delete(s.key, s.context, { w: 0 }), 'INVALID_QUORUM');
  // Not a whole number in range: refused when converting.
  await rejectsWith(client.get(s.key, { r: -1 }), 'INVALID_QUORUM');
  await rejectsWith(client.get(s.key, { r: 1.5 }), 'INVALID_QUORUM');
  await rejectsWith(client.put(s.key, 'x', s.context, { w: NaN }), 'INVALID_QUORUM');
  // The test node has N = 1: the server refuses anything larger.
  await rejectsWith(client.get(s.key, { r: 2 }), 'INVALID_QUORUM');
  await rejectsWith(client.put(s.key, 'x', s.context, { w: 2 }), 'INVALID_QUORUM');
  await rejectsWith(client.put(s.key, 'x', s.context, { w: 5 }), 'INVALID_QUORUM');
  await rejectsWith(client.delete(s.key, s.context, { w: 5 }), 'INVALID_QUORUM');
  await s.unchanged();
});

test('syncReplicas above W is INVALID_QUORUM, on the client and on the server', async () => {
  // On a fresh key: nothing is written.
  const fresh = freshKey('sync-fresh');
  for (const [options, n] of [
    [{ syncReplicas: 2 }, 2], // refused by the node: its W is 1
    [{ syncReplicas: 5 }, 5],
    [{ w: 1, syncReplicas: 2 }, 2], // refused by the client core before sending
  ]) {
    const e = await rejectsWith(client.put(fresh, 'x', null, options), 'INVALID_QUORUM');
    assert.ok(e.message.includes(`sync_replicas = ${n}`), e.message);
  }
  assert.deepEqual((await client.get(fresh)).values, []);
  // Over a stored value, puts and deletes alike: it is unchanged.
  const s = await seeded('sync-above-w');
  for (const [call, n] of [
    [() => client.put(s.key, 'x', s.context, { syncReplicas: 2 }), 2],
    [() => client.put(s.key, 'x', s.context, { w: 1, syncReplicas: 3 }), 3],
    [() => client.delete(s.key, s.context, { syncReplicas: 5 }), 5],
    [() => client.delete(s.key, s.context, { w: 1, syncReplicas: 2 }), 2],
  ]) {
    const e = await rejectsWith(call(), 'INVALID_QUORUM');
    assert.ok(e.message.includes(`sync_replicas = ${n}`), e.message);
  }
  // Not a whole number in range: refused when converting; another type is a TypeError.
  await rejectsWith(client.put(s.key, 'x', s.context, { syncReplicas: -1 }), 'INVALID_QUORUM');
  await rejectsWith(client.put(s.key, 'x', s.context, { syncReplicas: 0.5 }), 'INVALID_QUORUM');
  await assert.rejects(client.put(s.key, 'x', s.context, { syncReplicas: '1' }), TypeError);
  await assert.rejects(client.delete(s.key, s.context, { syncReplicas: true }), TypeError);
  await s.unchanged();
});

test('bad client configuration is INVALID_CONFIG, thrown by the constructor', () => {
  throwsWith(() => new Client([]), 'INVALID_CONFIG');
  throwsWith(() => new Client(['localhost']), 'INVALID_CONFIG');
  throwsWith(() => new Client(['not an address']), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:notaport']), 'INVALID_CONFIG');
  throwsWith(() => new Client([':7070']), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:7070'], { requestTimeoutMs: 0 }), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:7070'], { connectTimeoutMs: 0 }), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:7070'], { attemptTimeoutMs: 0 }), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:7070'], { attemptTimeoutMs: 2.5 }), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:7070'], { maxRetries: -1 }), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:7070'], { maxKeyBytes: 0 }), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:7070'], { requestTimeoutMs: 2.5 }), 'INVALID_CONFIG');
  // The options of client-driven coordination, hedged reads and batches.
  throwsWith(() => new Client(['127.0.0.1:7070'], { coordination: 'peer' }), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:7070'], { coordination: 'Client' }), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:7070'], { ringRefreshIntervalMs: 0 }), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:7070'], { ringRefreshIntervalMs: 1.5 }), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:7070'], { hedgeAfterMs: 0 }), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:7070'], { hedgeAfterMs: -5 }), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:7070'], { batchConcurrency: 0 }), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:7070'], { batchConcurrency: 2.5 }), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:7070'], { tlsReloadIntervalMs: 1.5 }), 'INVALID_CONFIG');
  throwsWith(() => new Client(['127.0.0.1:7070'], { tlsReloadIntervalMs: -1 }), 'INVALID_CONFIG');
  assert.ok(new Client(['127.0.0.1:7070'], { tlsReloadIntervalMs: 0 }));
  const configured = new Client(['127.0.0.1:7070'], {
    coordination: 'server',
    ringRefreshIntervalMs: 1000,
    hedgeAfterMs: 20,
    batchConcurrency: 4,
  });
  assert.equal(configured.coordination(), 'server');
  assert.equal(new Client(['127.0.0.1:7070']).coordination(), 'client');
  assert.equal(new Client(['127.0.0.1:7070'], { hedgeAfterMs: null }).ringVersion(), null);
  // Building does no I/O: a well-formed address of no node is accepted.
  assert.ok(new Client(['127.0.0.1:7070'], { requestTimeoutMs: 100, maxRetries: 0 }));
  assert.ok(new Client(['127.0.0.1:7070'], { requestTimeoutMs: 5000, attemptTimeoutMs: 1500 }));
});

test('arguments of the wrong JavaScript type are TypeErrors', async () => {
  await assert.rejects(client.get(42), TypeError);
  await assert.rejects(client.put('k', { not: 'bytes' }), TypeError);
  await assert.rejects(client.put('k', 'v', 'not a buffer'), TypeError);
  await assert.rejects(client.delete('k'), TypeError);
  await assert.rejects(client.get('k', { r: '1' }), TypeError);
  assert.throws(() => new Client('127.0.0.1:7070'), TypeError);
  assert.throws(() => new Client(['127.0.0.1:7070'], { maxRetries: '2' }), TypeError);
  assert.throws(() => new Client(['127.0.0.1:7070'], { attemptTimeoutMs: '1000' }), TypeError);
  assert.throws(() => new Client(['127.0.0.1:7070'], { coordination: 1 }), TypeError);
  assert.throws(() => new Client(['127.0.0.1:7070'], { hedgeAfterMs: '20' }), TypeError);
  assert.throws(() => new Client(['127.0.0.1:7070'], { batchConcurrency: '4' }), TypeError);
  assert.throws(() => new Client(['127.0.0.1:7070'], { ringRefreshIntervalMs: true }), TypeError);
});

test('a node that is not running is UNAVAILABLE (or TIMEOUT), whoever coordinates', async () => {
  const gone = await startNode({ nodeId: 'test-gone' });
  const options = { connectTimeoutMs: 500, requestTimeoutMs: 2000, maxRetries: 0 };
  const clients = ['client', 'server'].map((coordination) => new Client([gone.address], { ...options, coordination }));
  for (const c of clients) await c.put('alive', 'yes'); // it was reachable
  await gone.stop();
  for (const c of clients) {
    for (const [name, call] of [
      ['get', () => c.get('alive')],
      ['put', () => c.put('alive', 'no')],
      ['clusterInfo', () => c.clusterInfo()],
    ]) {
      const at = `${c.coordination()}-driven ${name}`;
      let caught;
      await assert.rejects(call(), (e) => {
        caught = e;
        return true;
      });
      assert.ok(caught instanceof DynamoKVError, `${at}: ${caught}`);
      assert.ok(['UNAVAILABLE', 'TIMEOUT'].includes(caught.code), `${at}: ${caught.code}: ${caught.message}`);
      if (caught.code === 'TIMEOUT') assert.equal(caught.afterMs, 2000);
    }
  }
});

test('coordination is "client" or "server"; anything else is INVALID_CONFIG', () => {
  assert.doesNotThrow(() => new Client(['127.0.0.1:7070'], { coordination: 'server' }));
  assert.doesNotThrow(() => new Client(['127.0.0.1:7070'], { coordination: 'client' }));
  assert.throws(
    () => new Client(['127.0.0.1:7070'], { coordination: 'both' }),
    (e) => e.code === 'INVALID_CONFIG' && /coordination/.test(e.message),
  );
  assert.throws(() => new Client(['127.0.0.1:7070'], { coordination: 1 }), TypeError);
});
