// The SDK computes what every DynamoKV server and client must compute byte for byte: every
// vector of conformance/vectors.json (see conformance/README.md) checked through `inspect`,
// which wraps client-core's shared code. Pure functions: no cluster.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { DynamoKVError, inspect } = require('..');

const vectors = JSON.parse(
  fs.readFileSync(path.resolve(__dirname, '..', '..', 'conformance', 'vectors.json'), 'utf8'),
);
const hex = (s) => Buffer.from(s, 'hex');

// The messages the shared code refuses contexts with (common/src/context.rs, ContextError).
const MALFORMED = 'is not a DynamoKV context';
const WRONG_KEY = 'belongs to another key';
const NOT_ISSUED = 'not issued by this cluster';

test('the vectors file is the schema this test reads', () => {
  assert.equal(vectors.schema_version, 1);
  assert.ok(vectors.keys.length >= 20);
  assert.ok(vectors.rings.length >= 4);
  assert.ok(vectors.contexts.length >= 8);
  assert.ok(vectors.invalid_contexts.length >= 6);
});

test('key positions and partitions match the vectors', () => {
  for (const v of vectors.keys) {
    const key = hex(v.key_hex);
    const position = inspect.keyPosition(key);
    assert.equal(typeof position, 'bigint');
    assert.equal(position, BigInt(v.position), `keys/${v.name}: position`);
    const counts = Object.entries(v.partition);
    assert.equal(counts.length, 3, `keys/${v.name}`);
    for (const [q, p] of counts) {
      assert.equal(inspect.partitionOf(key, Number(q)), p, `keys/${v.name}: partition for Q = ${q}`);
    }
  }
});

test('preference lists and fallbacks match the vectors', () => {
  let checked = 0;
  for (const ring of vectors.rings) {
    for (const v of ring.keys) {
      const at = `rings/${ring.name}/keys/${v.name}`;
      const key = hex(v.key_hex);
      assert.equal(inspect.partitionOf(key, ring.partitions), v.partition, `${at}: partition`);
      const list = inspect.preferenceList(ring.members, ring.partitions, key, ring.n);
      assert.deepEqual(list.replicas, v.preference_list, `${at}: preference_list`);
      assert.deepEqual(list.fallbacks, v.fallbacks, `${at}: fallbacks`);
      checked += 1;
    }
  }
  assert.ok(checked >= 20, `only ${checked} ring keys`);
});

test('contexts decode as the vectors say', () => {
  const dots = (list) => list.map((d) => ({ actor: BigInt(d.actor), counter: BigInt(d.counter) }));
  for (const v of vectors.contexts) {
    const got = inspect.describeContext(hex(v.key_hex), hex(v.bytes_hex));
    assert.deepEqual(
      got,
      {
        clock: dots(v.decoded.clock),
        cloud: dots(v.decoded.cloud),
        seenWrites: v.decoded.seen_writes,
        fastestReplica: v.decoded.fastest_replica,
      },
      `contexts/${v.name}`,
    );
  }
  // Some vector exercises each part, so a binding that dropped one would fail above.
  assert.ok(vectors.contexts.some((v) => v.decoded.cloud.length > 0));
  assert.ok(vectors.contexts.some((v) => v.decoded.seen_writes.length > 0));
  assert.ok(vectors.contexts.some((v) => v.decoded.fastest_replica !== null));
  assert.ok(vectors.contexts.some((v) => v.decoded.clock.some((d) => BigInt(d.actor) > 2n ** 53n)));
});

test('invalid contexts are refused as the vectors say', () => {
  for (const v of vectors.invalid_contexts) {
    const at = `invalid_contexts/${v.name}`;
    let caught;
    assert.throws(
      () => inspect.describeContext(hex(v.key_hex), hex(v.bytes_hex)),
      (e) => {
        caught = e;
        return true;
      },
      at,
    );
    assert.ok(caught instanceof DynamoKVError, `${at}: ${caught}`);
    assert.equal(caught.code, 'INVALID_CONTEXT', at);
    switch (v.error) {
      case 'malformed':
        assert.ok(caught.message.includes(MALFORMED), `${at}: ${caught.message}`);
        break;
      case 'wrong_key':
        assert.ok(caught.message.includes(WRONG_KEY), `${at}: ${caught.message}`);
        break;
      case 'invalid':
        assert.ok(
          !caught.message.includes(MALFORMED) && !caught.message.includes(WRONG_KEY),
          `${at}: ${caught.message}`,
        );
        break;
      case 'not_issued':
        assert.ok(caught.message.includes(NOT_ISSUED), `${at}: ${caught.message}`);
        break;
      default:
        assert.fail(`${at}: unknown error kind ${v.error}`);
    }
  }
});

test('bad inputs to the helpers are INVALID_CONFIG or TypeErrors', () => {
  const isConfig = (e) => e instanceof DynamoKVError && e.code === 'INVALID_CONFIG';
  for (const q of [0, 3, 100, 2 ** 21, 1.5, -8]) {
    assert.throws(() => inspect.partitionOf('cart:42', q), isConfig, `Q = ${q}`);
  }
  assert.equal(inspect.partitionOf('cart:42', 1), 0);
  const m = (id, weight = 1) => ({ id, address: `${id}:7070`, zone: '', weight });
  for (const [members, q, n] of [
    [[], 8, 3],
    [[m('a'), m('a')], 8, 3],
    [[m('a'), m('')], 8, 3],
    [[m('a', 0)], 8, 3],
    [[m('a'), m('b'), m('c')], 2, 3],
    [[m('a')], 8, 0],
  ]) {
    assert.throws(() => inspect.preferenceList(members, q, 'k', n), isConfig, JSON.stringify(members));
  }
  // zone and weight may be left out; N above the cluster size is capped.
  const list = inspect.preferenceList([{ id: 'a', address: 'a:1' }, { id: 'b', address: 'b:1' }], 8, 'k', 5);
  assert.equal(list.replicas.length + list.fallbacks.length, 2);
  assert.deepEqual(list.replicas.slice().sort(), ['a', 'b']);
  // A string key is its UTF-8 bytes.
  assert.equal(inspect.keyPosition('é'), inspect.keyPosition(Buffer.from('é', 'utf8')));
  assert.deepEqual(inspect.describeContext('k', Buffer.alloc(0)), {
    clock: [],
    cloud: [],
    seenWrites: [],
    fastestReplica: null,
  });
  assert.throws(() => inspect.keyPosition(42), TypeError);
  assert.throws(() => inspect.partitionOf('k', '8'), TypeError);
  assert.throws(() => inspect.preferenceList('a', 8, 'k', 3), TypeError);
  assert.throws(() => inspect.preferenceList([{ id: 1, address: 'a:1' }], 8, 'k', 3), TypeError);
  assert.throws(() => inspect.describeContext('k', 'not bytes'), TypeError);
});
