// Reconciliation and batches against a real 3-node cluster (N = 3, R = W = 2): sibling
// metadata, the built-in resolvers, custom JavaScript resolvers (their own errors propagate and
// nothing is written), write-back converging every replica, and getMany / putMany.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { Client, DynamoKVError, resolvers } = require('..');
const { startCluster, localSiblings, until } = require('../test-support/cluster');

let cluster;
let client;
let counter = 0;
const freshKey = (name) => `resolvers:${name}:${process.pid}:${++counter}`;
const strings = (values) => values.map((v) => v.toString('utf8'));
const sorted = (values) => strings(values).sort();

before(async () => {
  cluster = await startCluster();
  client = new Client(cluster.seeds, { requestTimeoutMs: 10000, attemptTimeoutMs: 3000 });
});

after(async () => {
  await cluster?.stop();
});

/** Two blind puts: two concurrent siblings. */
async function siblings(name, a, b) {
  const key = freshKey(name);
  await client.put(key, a);
  await client.put(key, b);
  const got = await client.get(key, { r: 3 });
  assert.deepEqual(sorted(got.values), [a, b].sort());
  return { key, got };
}

/** Every replica holds exactly `values` (sorted text) of `key`, polled until a deadline. */
async function everyReplicaHolds(key, values) {
  const want = [...values].sort();
  let seen;
  await until(Date.now() + 10000, `every replica of ${key} to hold ${JSON.stringify(want)}`, async () => {
    seen = await Promise.all(cluster.seeds.map((a) => localSiblings(a, key)));
    return seen.every((s) => JSON.stringify([...s].sort()) === JSON.stringify(want));
  }).catch((e) => {
    throw new Error(`${e.message}; replicas hold ${JSON.stringify(seen)}`);
  });
}

/** Nothing was written over the two siblings `a` and `b` of `key`: each replica holds both. */
async function stillBoth(key, a, b) {
  const got = await client.get(key, { r: 3 });
  assert.deepEqual(sorted(got.values), [a, b].sort());
  for (const address of cluster.seeds) {
    assert.deepEqual((await localSiblings(address, key)).sort(), [a, b].sort(), address);
  }
}

test('a get shows each sibling with its write time, and the tombstone flag', async () => {
  const t0 = Date.now();
  const { got } = await siblings('metadata', '["a"]', '["b"]');
  assert.equal(got.timestampsMs.length, 2);
  for (const t of got.timestampsMs) {
    assert.ok(Number.isInteger(t), `timestamp ${t}`);
    // The nodes run on this machine: their clocks are this process's.
    assert.ok(t >= t0 - 1000 && t <= Date.now() + 1000, `timestamp ${t} vs now ${Date.now()}`);
  }
  assert.equal(got.tombstone, false);

  // A delete concurrent with a write: the value and the tombstone flag.
  const k = freshKey('tombstone');
  await client.put(k, 'v0');
  const v0 = await client.get(k);
  assert.equal(v0.tombstone, false);
  assert.equal(v0.timestampsMs.length, 1);
  await client.put(k, 'v1', v0.context);
  await client.delete(k, v0.context);
  const both = await client.get(k, { r: 3 });
  assert.deepEqual(strings(both.values), ['v1']);
  assert.equal(both.timestampsMs.length, 1);
  assert.equal(both.tombstone, true);

  // One value beside a tombstone is written back without calling the resolver.
  let calls = 0;
  const resolved = await client.get(k, {
    resolver: () => {
      calls += 1;
      return Buffer.from('never');
    },
  });
  assert.equal(calls, 0);
  assert.equal(resolved.value.toString(), 'v1');
  assert.equal(resolved.siblings, 1);
  assert.equal(resolved.writtenBack, true);
  const after = await client.get(k, { r: 3 });
  assert.deepEqual(strings(after.values), ['v1']);
  assert.equal(after.tombstone, false);
});

test('unionJson merges siblings; the write-back leaves one version on every replica', async () => {
  const { key } = await siblings('union', '["apple"]', '["pear","apple"]');
  const resolved = await client.get(key, { resolver: resolvers.unionJson });
  assert.equal(resolved.siblings, 2);
  assert.equal(resolved.writtenBack, true);
  assert.ok(Buffer.isBuffer(resolved.value));
  assert.deepEqual(JSON.parse(resolved.value.toString()).sort(), ['apple', 'pear']);
  assert.ok(Buffer.isBuffer(resolved.context) && resolved.context.length > 0);

  const merged = resolved.value.toString();
  const all = await client.get(key, { r: 3 });
  assert.deepEqual(strings(all.values), [merged]);
  await everyReplicaHolds(key, [merged]);

  // The resolved context supersedes the merged version: the next write replaces it.
  await client.put(key, '["fig"]', resolved.context);
  assert.deepEqual(strings((await client.get(key, { r: 3 })).values), ['["fig"]']);
});

test('lastWriterWins picks the later write', async () => {
  const key = freshKey('lww');
  // The earlier write has the greater bytes, so a tie broken by bytes would pick it.
  await client.put(key, 'z-earlier');
  const first = await client.get(key, { r: 3 });
  // Wait for the clock to move past the first write's millisecond.
  await until(Date.now() + 5000, 'the clock to move on', () => Date.now() > first.timestampsMs[0] + 1, 1);
  await client.put(key, 'a-later');
  const got = await client.get(key, { r: 3 });
  assert.equal(got.values.length, 2);
  const byTime = got.values
    .map((v, i) => [got.timestampsMs[i], v.toString()])
    .sort((x, y) => x[0] - y[0]);
  assert.deepEqual(
    byTime.map(([, v]) => v),
    ['z-earlier', 'a-later'],
  );
  assert.ok(byTime[1][0] > byTime[0][0]);

  const resolved = await client.get(key, { resolver: resolvers.lastWriterWins });
  assert.equal(resolved.value.toString(), 'a-later');
  assert.equal(resolved.siblings, 2);
  assert.equal(resolved.writtenBack, true);
  assert.deepEqual(strings((await client.get(key, { r: 3 })).values), ['a-later']);
});

test('a custom resolver gets the values and their metadata; its result is written back', async () => {
  const { key, got } = await siblings('custom', 'one', 'two');
  const calls = [];
  const resolved = await client.get(key, {
    r: 3,
    resolver: async (values, meta) => {
      calls.push({ values, meta });
      await new Promise((resolve) => setImmediate(resolve)); // a real Promise, settled later
      return Buffer.from(strings(values).sort().join('+'));
    },
  });
  assert.equal(calls.length, 1);
  const [{ values, meta }] = calls;
  assert.ok(values.every((v) => Buffer.isBuffer(v)));
  assert.deepEqual(sorted(values), ['one', 'two']);
  assert.ok(Buffer.isBuffer(meta.key));
  assert.equal(meta.key.toString(), key);
  assert.equal(meta.tombstone, false);
  // The same siblings as a plain get shows, each with its write time.
  const time = (vs, ts, v) => ts[strings(vs).indexOf(v)];
  for (const v of ['one', 'two']) {
    assert.equal(time(values, meta.timestampsMs, v), time(got.values, got.timestampsMs, v), v);
  }
  assert.equal(resolved.value.toString(), 'one+two');
  assert.equal(resolved.siblings, 2);
  assert.equal(resolved.writtenBack, true);
  await everyReplicaHolds(key, ['one+two']);

  // A synchronous resolver returning a Uint8Array works too.
  const k2 = (await siblings('custom-sync', 'x', 'y')).key;
  const r2 = await client.get(k2, { resolver: () => new Uint8Array([104, 105]) });
  assert.ok(Buffer.isBuffer(r2.value));
  assert.equal(r2.value.toString(), 'hi');
  assert.deepEqual(strings((await client.get(k2, { r: 3 })).values), ['hi']);
});

test('writeBack: false resolves without writing; one value or none needs no resolver', async () => {
  const { key } = await siblings('no-write-back', '["a"]', '["b"]');
  const resolved = await client.get(key, { resolver: resolvers.unionJson, writeBack: false });
  assert.deepEqual(JSON.parse(resolved.value.toString()).sort(), ['a', 'b']);
  assert.equal(resolved.writtenBack, false);
  assert.equal(resolved.siblings, 2);
  await stillBoth(key, '["a"]', '["b"]');

  let calls = 0;
  const counting = () => {
    calls += 1;
    return Buffer.from('x');
  };
  const missing = await client.get(freshKey('missing'), { resolver: counting });
  assert.equal(missing.value, null);
  assert.equal(missing.siblings, 0);
  assert.equal(missing.writtenBack, false);
  assert.ok(Buffer.isBuffer(missing.context));

  const single = freshKey('single');
  await client.put(single, 'only');
  const one = await client.get(single, { resolver: counting });
  assert.equal(one.value.toString(), 'only');
  assert.equal(one.siblings, 1);
  assert.equal(one.writtenBack, false);
  assert.equal(calls, 0);
});

class CartError extends Error {}

test('a resolver that throws or rejects: the call rejects with its very error; nothing is written', async () => {
  const { key } = await siblings('throws', '["a"]', '["b"]');
  const thrown = new CartError('the cart cannot be merged');
  for (const resolver of [
    () => {
      throw thrown;
    },
    async () => {
      throw thrown;
    },
    () => Promise.reject(thrown),
  ]) {
    let caught;
    await assert.rejects(client.get(key, { resolver }), (e) => {
      caught = e;
      return true;
    });
    assert.equal(caught, thrown, `got ${caught}`);
    assert.ok(caught instanceof CartError);
  }
  // Anything thrown comes back as it was, not only errors.
  for (const value of ['a string', 42, null, undefined, Symbol.for('dynamokv-test')]) {
    let caught = 'not rejected';
    await client
      .get(key, {
        resolver: () => {
          throw value;
        },
      })
      .then(
        () => assert.fail('the get resolved'),
        (e) => {
          caught = e;
        },
      );
    assert.equal(caught, value);
  }
  await stillBoth(key, '["a"]', '["b"]');
});

test('a resolver that returns something that is not bytes is a TypeError; nothing is written', async () => {
  const { key } = await siblings('not-bytes', 'p', 'q');
  for (const [what, resolver] of [
    ['a string', () => 'merged'],
    ['a number', () => 7],
    ['null', () => null],
    ['undefined', () => undefined],
    ['an array', () => [1, 2]],
    ['an object', () => ({ value: Buffer.from('x') })],
    ['a Promise of a string', async () => 'merged'],
  ]) {
    let caught;
    await assert.rejects(client.get(key, { resolver }), (e) => {
      caught = e;
      return true;
    });
    assert.ok(caught instanceof TypeError, `${what}: ${caught}`);
    assert.match(caught.message, /must return a Buffer or Uint8Array/, what);
  }
  await stillBoth(key, 'p', 'q');
});

test('a failing built-in or an unstorable result is RESOLVER_FAILED; nothing is written', async () => {
  const { key } = await siblings('not-arrays', '{"a":1}', '["b"]');
  let caught;
  await assert.rejects(client.get(key, { resolver: resolvers.unionJson }), (e) => {
    caught = e;
    return true;
  });
  assert.ok(caught instanceof DynamoKVError, String(caught));
  assert.equal(caught.code, 'RESOLVER_FAILED');
  assert.match(caught.message, /nothing was written/);
  assert.match(caught.message, /not an array/);
  await stillBoth(key, '{"a":1}', '["b"]');

  // A custom resolver's value over the value limit (1 MiB) cannot be written back.
  await assert.rejects(
    client.get(key, { resolver: () => Buffer.alloc(1024 * 1024 + 1) }),
    (e) => e instanceof DynamoKVError && e.code === 'RESOLVER_FAILED',
  );
  await stillBoth(key, '{"a":1}', '["b"]');
});

test('putMany and getMany: an empty key fails that item only', async () => {
  const [k1, k2, k3] = [freshKey('batch-1'), freshKey('batch-2'), freshKey('batch-3')];
  await client.put(k3, 'old');
  const { context } = await client.get(k3);
  const puts = await client.putMany([
    { key: k1, value: 'one' },
    { key: '', value: 'nothing' },
    { key: Buffer.from(k2), value: Buffer.from('two') },
    { key: k3, value: 'new', context },
  ]);
  assert.equal(puts.length, 4);
  assert.deepEqual(
    puts.map((p) => p.ok),
    [true, false, true, true],
  );
  for (const i of [0, 2, 3]) assert.ok(Buffer.isBuffer(puts[i].value) && puts[i].value.length > 0);
  assert.ok(puts[1].error instanceof DynamoKVError);
  assert.equal(puts[1].error.code, 'EMPTY_KEY');
  assert.equal(puts[1].value, undefined);

  const missing = freshKey('batch-missing');
  const gets = await client.getMany([k1, '', k2, k3, missing], { r: 3 });
  assert.deepEqual(
    gets.map((g) => g.ok),
    [true, false, true, true, true],
  );
  assert.equal(gets[1].error.code, 'EMPTY_KEY');
  assert.deepEqual(strings(gets[0].value.values), ['one']);
  assert.deepEqual(strings(gets[2].value.values), ['two']);
  assert.deepEqual(strings(gets[3].value.values), ['new']); // the context superseded 'old'
  assert.deepEqual(gets[4].value.values, []);
  assert.equal(gets[0].value.timestampsMs.length, 1);
  assert.equal(gets[0].value.tombstone, false);

  // The context of a batch put is usable for the next write.
  await client.put(k1, 'one-again', puts[0].value);
  assert.deepEqual(strings((await client.get(k1, { r: 3 })).values), ['one-again']);

  assert.deepEqual(await client.getMany([]), []);
  assert.deepEqual(await client.putMany([]), []);
});

test('getMany with a resolver: each key resolved; a throwing resolver fails its key only', async () => {
  const merged = (await siblings('batch-merge', '["a"]', '["b"]')).key;
  const broken = (await siblings('batch-broken', '["c"]', '["d"]')).key;
  const single = freshKey('batch-single');
  await client.put(single, '["e"]');
  const thrown = new CartError(`cannot merge ${broken}`);
  const resolver = (values, { key }) => {
    if (key.toString() === broken) throw thrown;
    return Buffer.from(JSON.stringify(values.flatMap((v) => JSON.parse(v)).sort()));
  };
  const got = await client.getMany([merged, broken, single, ''], { resolver });
  assert.deepEqual(
    got.map((g) => g.ok),
    [true, false, true, false],
  );
  assert.equal(got[0].value.value.toString(), '["a","b"]');
  assert.equal(got[0].value.siblings, 2);
  assert.equal(got[0].value.writtenBack, true);
  assert.equal(got[1].error, thrown);
  assert.equal(got[2].value.value.toString(), '["e"]');
  assert.equal(got[2].value.siblings, 1);
  assert.equal(got[2].value.writtenBack, false);
  assert.equal(got[3].error.code, 'EMPTY_KEY');
  await everyReplicaHolds(merged, ['["a","b"]']);
  await stillBoth(broken, '["c"]', '["d"]');

  // A built-in, without write-back.
  const viaBuiltin = await client.getMany([broken], { resolver: resolvers.unionJson, writeBack: false });
  assert.equal(viaBuiltin[0].ok, true);
  assert.deepEqual(JSON.parse(viaBuiltin[0].value.value.toString()).sort(), ['c', 'd']);
  assert.equal(viaBuiltin[0].value.writtenBack, false);
  await stillBoth(broken, '["c"]', '["d"]');
});

test('wrong JavaScript types in resolving gets and batches are TypeErrors', async () => {
  const key = freshKey('types');
  await assert.rejects(client.get(key, { resolver: 42 }), TypeError);
  await assert.rejects(client.get(key, { resolver: 'unionJson' }), TypeError);
  await assert.rejects(client.get(key, { resolver: {} }), TypeError);
  await assert.rejects(client.get(key, { resolver: resolvers.unionJson, writeBack: 'no' }), TypeError);
  await assert.rejects(client.getMany(key), TypeError);
  await assert.rejects(client.getMany([key, 42]), TypeError);
  await assert.rejects(client.putMany({ key, value: 'v' }), TypeError);
  await assert.rejects(client.putMany([{ key, value: 42 }]), TypeError);
  await assert.rejects(client.putMany([{ key, value: 'v', context: 'ctx' }]), TypeError);
  await assert.rejects(client.putMany([null]), TypeError);
  await assert.rejects(client.putMany([{ key, value: 'v' }], { w: '2' }), TypeError);
  assert.throws(() => new resolvers.unionJson.constructor('x', 'unionJson'), TypeError);
  assert.ok(Object.isFrozen(resolvers));
  assert.equal(resolvers.lastWriterWins.name, 'lastWriterWins');
  assert.equal(resolvers.unionJson.name, 'unionJson');
  // Nothing was written by any of them.
  assert.deepEqual((await client.get(key, { r: 3 })).values, []);
});
