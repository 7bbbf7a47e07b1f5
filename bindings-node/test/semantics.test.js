// Dynamo's versioning as a user sees it: siblings from concurrent writes, reconciliation with
// a context, deletes, and the cluster description.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { Client } = require('..');
const { startNode } = require('../test-support/node');

let node;
let client;
let counter = 0;
const freshKey = (name) => `semantics:${name}:${process.pid}:${++counter}`;
const strings = (values) => values.map((v) => v.toString('utf8'));

before(async () => {
  node = await startNode();
  client = new Client([node.address]);
});

after(async () => {
  await node?.stop();
});

test('siblings appear for concurrent writes and a context reconciles them', async () => {
  const k = freshKey('siblings');
  await client.put(k, 'v0');
  const { values: v0, context: ctx0 } = await client.get(k);
  assert.deepEqual(strings(v0), ['v0']);
  assert.ok(Buffer.isBuffer(ctx0) && ctx0.length > 0);

  // Two writers start from the same (now stale) context.
  await client.put(k, 'a', ctx0);
  await client.put(k, 'b', ctx0);
  const { values: both, context: ctx1 } = await client.get(k);
  assert.deepEqual(strings(both).sort(), ['a', 'b']);

  await client.put(k, 'c', ctx1);
  const reconciled = await client.get(k);
  assert.deepEqual(strings(reconciled.values), ['c']);

  await client.delete(k, reconciled.context);
  assert.deepEqual((await client.get(k)).values, []);

  await client.put(k, 'd');
  assert.deepEqual(strings((await client.get(k)).values), ['d']);
});

test('a write without context after a write becomes a sibling', async () => {
  const k = freshKey('blind');
  await client.put(k, 'x');
  await client.put(k, 'y');
  assert.deepEqual(strings((await client.get(k)).values).sort(), ['x', 'y']);
});

test('put resolves to a context usable for the next write', async () => {
  const k = freshKey('put-context');
  const ctx = await client.put(k, 'one');
  assert.ok(Buffer.isBuffer(ctx) && ctx.length > 0);
  await client.put(k, 'two', ctx);
  assert.deepEqual(strings((await client.get(k)).values), ['two']);
});

test('a missing key has no values', async () => {
  const got = await client.get(freshKey('missing'));
  assert.deepEqual(got.values, []);
  assert.ok(Buffer.isBuffer(got.context));
});

test('string and Buffer keys are the same key; values are bytes', async () => {
  const k = freshKey('bytes');
  const binary = Buffer.from([0, 255, 1, 254, 0]);
  await client.put(Buffer.from(k, 'utf8'), binary);
  const got = await client.get(k);
  assert.equal(got.values.length, 1);
  assert.ok(Buffer.isBuffer(got.values[0]));
  assert.deepEqual(got.values[0], binary);

  const k2 = freshKey('utf8-é');
  await client.put(new Uint8Array(Buffer.from(k2, 'utf8')), 'grüße ✓');
  assert.deepEqual(strings((await client.get(Buffer.from(k2))).values), ['grüße ✓']);
});

test('per-call quorums inside 1..=N are accepted', async () => {
  const k = freshKey('quorum-ok');
  const ctx = await client.put(k, 'q', null, { w: 1 });
  assert.deepEqual(strings((await client.get(k, { r: 1 })).values), ['q']);
  await client.delete(k, ctx, { w: 1 });
  assert.deepEqual((await client.get(k, { r: 1 })).values, []);
});

test('syncReplicas inside 0..=W is accepted, for puts and deletes', async () => {
  // The test node's W is 1.
  const k = freshKey('sync-ok');
  const ctx = await client.put(k, 'synced', null, { syncReplicas: 1 });
  assert.ok(Buffer.isBuffer(ctx) && ctx.length > 0);
  assert.deepEqual(strings((await client.get(k)).values), ['synced']);
  await client.put(k, 'synced-w1', ctx, { w: 1, syncReplicas: 1 });
  const { context } = await client.get(k);
  await client.put(k, 'unsynced', context, { syncReplicas: 0 });
  const got = await client.get(k);
  assert.deepEqual(strings(got.values), ['unsynced']);
  await client.delete(k, got.context, { syncReplicas: 1 });
  assert.deepEqual((await client.get(k)).values, []);
});

test('values up to the limit round-trip', async () => {
  const k = freshKey('big');
  const big = Buffer.alloc(1024 * 1024, 7);
  await client.put(k, big);
  const got = await client.get(k);
  assert.equal(got.values.length, 1);
  assert.ok(got.values[0].equals(big));
});

test('clusterInfo describes the single test node', async () => {
  const info = await client.clusterInfo();
  assert.equal(typeof info.clusterName, 'string');
  assert.ok(info.partitions > 0);
  assert.equal(info.n, 1);
  assert.ok(info.r >= 1 && info.r <= info.n);
  assert.ok(info.w >= 1 && info.w <= info.n);
  assert.equal(info.answeredBy, 'test-1');
  assert.equal(info.members.length, 1);
  const [m] = info.members;
  assert.equal(m.id, 'test-1');
  assert.equal(m.address, node.address);
  assert.equal(typeof m.zone, 'string');
  assert.ok(Number.isInteger(m.weight) && m.weight > 0);
});

test('nodeHealth lists every seed as up, before and after a call', async () => {
  const other = '127.0.0.1:1'; // no node there; this client makes no call
  const c = new Client([node.address, other], { attemptTimeoutMs: 2000 });
  assert.deepEqual(c.nodeHealth(), [
    { address: node.address, up: true },
    { address: other, up: true },
  ]);

  const live = new Client([node.address], { requestTimeoutMs: 5000, attemptTimeoutMs: 2000 });
  const k = freshKey('health');
  await live.put(k, 'v');
  assert.deepEqual(strings((await live.get(k)).values), ['v']);
  assert.deepEqual(live.nodeHealth(), [{ address: node.address, up: true }]);
});

test('calls run concurrently on one client', async () => {
  const keys = Array.from({ length: 32 }, (_, i) => freshKey(`concurrent-${i}`));
  await Promise.all(keys.map((k, i) => client.put(k, `v${i}`)));
  const got = await Promise.all(keys.map((k) => client.get(k)));
  assert.deepEqual(
    got.map((g) => strings(g.values)),
    keys.map((_, i) => [`v${i}`]),
  );
});
