// Client-driven coordination (paper 6.4) against a real 3-node cluster (N = 3, R = W = 2):
// requests reach the nodes the key's preference list names (checked on each node's own
// Prometheus counters), a hung node is routed around, server-driven mode goes through the seed,
// the client's ring version, and the shopping cart example with a node stopped mid-way.
//
// The tests of this file share one cluster and run in order: those reading counters come
// before those that stop a node (a resumed node may still answer requests it held).
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');

const { Client, DynamoKVError, inspect, resolvers } = require('..');
const { startCluster, localSiblings, until } = require('../test-support/cluster');

const READS = 'dynamokv_requests_total{op="read_replica",outcome="ok"}';
const PUTS = 'dynamokv_requests_total{op="put",outcome="ok"}';
const GETS = 'dynamokv_requests_total{op="get",outcome="ok"}';
const EXAMPLE = path.resolve(__dirname, '..', '..', 'examples', 'node', 'shopping_cart.js');

let cluster;
let counter = 0;
const freshKey = (name) => `cluster:${name}:${process.pid}:${++counter}`;
const strings = (values) => values.map((v) => v.toString('utf8'));
const delta = (after, before) => after.map((a, i) => a - before[i]);

before(async () => {
  cluster = await startCluster();
});

after(async () => {
  await cluster?.stop();
});

/** A client of the cluster; `seeds` are node indexes (all by default). */
function clientOf(seeds = [0, 1, 2], options = {}) {
  return new Client(
    seeds.map((i) => cluster.seeds[i]),
    { requestTimeoutMs: 10000, attemptTimeoutMs: 2500, ...options },
  );
}

/** The node indexes of `key`'s replicas, the first replica first, from the ring `info` gives. */
function replicasOf(info, key) {
  const { replicas } = inspect.preferenceList(info.members, info.partitions, key, info.n);
  return replicas.map((id) => {
    const i = cluster.nodes.findIndex((n) => n.nodeId === id);
    assert.ok(i >= 0, `${id} is not a node of the test cluster`);
    return i;
  });
}

/** Polls until `series` moved by exactly `want` on every node since `before`. */
async function countersMove(series, before, want, what) {
  let seen;
  await until(Date.now() + 5000, what, async () => {
    seen = delta(await cluster.counters(series), before);
    return JSON.stringify(seen) === JSON.stringify(want);
  }).catch((e) => {
    throw new Error(`${e.message}: ${series} moved by ${JSON.stringify(seen)}, not ${JSON.stringify(want)}`);
  });
}

test('the cluster has three nodes, N = 3, R = W = 2', async () => {
  const info = await clientOf().clusterInfo();
  assert.equal(info.members.length, 3);
  assert.deepEqual(info.members.map((m) => m.id).sort(), ['node-1', 'node-2', 'node-3']);
  assert.deepEqual([info.n, info.r, info.w], [3, 2, 2]);
  assert.equal(info.ringVersion, cluster.ringVersion);
});

test('the client pulls the ring: ringVersion, refreshRing, connect', async () => {
  const client = clientOf([0]);
  assert.equal(client.coordination(), 'client');
  assert.equal(client.ringVersion(), null); // no I/O yet
  assert.equal(await client.refreshRing(), cluster.ringVersion);
  assert.equal(client.ringVersion(), cluster.ringVersion);
  // nodeHealth lists the ring's members, not only the seed, once the client routes by the ring.
  assert.deepEqual(
    client.nodeHealth().map((h) => h.address).sort(),
    [...cluster.seeds].sort(),
  );

  const connected = await Client.connect([cluster.seeds[2]], { requestTimeoutMs: 5000 });
  assert.ok(connected instanceof Client);
  assert.equal(connected.ringVersion(), cluster.ringVersion);

  await assert.rejects(
    Client.connect(['127.0.0.1:1'], { requestTimeoutMs: 1000, connectTimeoutMs: 200 }),
    (e) => e instanceof DynamoKVError && ['UNAVAILABLE', 'TIMEOUT'].includes(e.code),
  );
});

test('client-driven gets and puts reach the nodes the preference list names', async () => {
  const client = clientOf([0]); // one seed: the ring names the rest
  await client.refreshRing();
  const info = await client.clusterInfo();
  const firstReplicas = new Set();
  for (let k = 0; k < 12; k++) {
    const key = freshKey(`routed-${k}`);
    const replicas = replicasOf(info, key);
    assert.equal(replicas.length, 3);
    firstReplicas.add(replicas[0]);
    const [reads0, puts0, gets0] = await Promise.all(
      [READS, PUTS, GETS].map((s) => cluster.counters(s)),
    );

    await client.put(key, `v${k}`);
    // The put went straight to the key's first replica, which coordinated it.
    const puts = [0, 0, 0];
    puts[replicas[0]] = 1;
    await countersMove(PUTS, puts0, puts, `${key}: the put on ${cluster.nodes[replicas[0]].nodeId} only`);

    const got = await client.get(key);
    assert.deepEqual(strings(got.values), [`v${k}`]);
    // The client read each replica once (late answers are counted too, so poll for the
    // third) and no node coordinated a get.
    const reads = [0, 0, 0];
    for (const r of replicas) reads[r] = 1;
    await countersMove(READS, reads0, reads, `${key}: one replica read on each replica`);
    assert.deepEqual(delta(await cluster.counters(GETS), gets0), [0, 0, 0]);
  }
  // The keys spread over the nodes: the check above named more than one first replica.
  assert.ok(firstReplicas.size >= 2, `every key had the same first replica`);
});

test('server-driven coordination: the seed coordinates every get', async () => {
  const client = clientOf([0], { coordination: 'server' });
  assert.equal(client.coordination(), 'server');
  const keys = Array.from({ length: 5 }, (_, i) => freshKey(`server-${i}`));
  for (const key of keys) await client.put(key, key);
  const [gets0, reads0] = await Promise.all([GETS, READS].map((s) => cluster.counters(s)));
  for (const key of keys) assert.deepEqual(strings((await client.get(key)).values), [key]);
  await countersMove(GETS, gets0, [5, 0, 0], 'five gets coordinated by the seed, node-1');
  // Server-driven, the client sends no replica reads of its own.
  assert.deepEqual(delta(await cluster.counters(READS), reads0), [0, 0, 0]);
  const info = await client.clusterInfo();
  assert.equal(info.answeredBy, 'node-1');
  assert.equal(info.ringVersion, cluster.ringVersion);
});

test('hedged reads and a small batch concurrency work', async () => {
  const client = clientOf([0, 1, 2], { hedgeAfterMs: 1, batchConcurrency: 2, ringRefreshIntervalMs: 500 });
  const keys = Array.from({ length: 6 }, (_, i) => freshKey(`hedged-${i}`));
  const puts = await client.putMany(keys.map((key) => ({ key, value: key })));
  assert.ok(puts.every((p) => p.ok), JSON.stringify(puts));
  const gets = await client.getMany(keys);
  assert.deepEqual(
    gets.map((g) => strings(g.value.values)),
    keys.map((k) => [k]),
  );
  const off = clientOf([0], { hedgeAfterMs: null });
  assert.deepEqual(strings((await off.get(keys[0])).values), [keys[0]]);
});

test('a stopped node is routed around: gets and puts with R = W = 2 succeed', async () => {
  const client = clientOf();
  const info = await client.clusterInfo();
  const stopped = 1; // node-2
  // Keys whose first replica is the stopped node (a put must go around it) and others.
  const keys = [];
  for (let k = 0; keys.length < 6; k++) {
    const key = freshKey(`around-${k}`);
    const first = replicasOf(info, key)[0] === stopped;
    if (keys.filter((x) => x.first === first).length < 3) keys.push({ key, first });
  }
  for (const { key } of keys) await client.put(key, 'before');
  let blind;

  cluster.pause(stopped);
  try {
    for (const { key } of keys) {
      const got = await client.get(key, { r: 2 });
      assert.deepEqual(strings(got.values), ['before'], key);
      await client.put(key, 'after', got.context, { w: 2 });
      assert.deepEqual(strings((await client.get(key, { r: 2 })).values), ['after'], key);
    }
    // A put with a get's context goes first to the replica that answered that get; a blind
    // put goes to the key's first replica: the stopped node, silent until the attempt timeout.
    blind = keys.find((k) => k.first).key;
    await client.put(blind, 'blind', null, { w: 2 });
    assert.deepEqual(strings((await client.get(blind, { r: 2 })).values).sort(), ['after', 'blind']);
    const health = client.nodeHealth();
    assert.ok(
      health.some((h) => h.address === cluster.seeds[stopped] && !h.up),
      `the stopped node is marked down: ${JSON.stringify(health)}`,
    );
    // A quorum the two live nodes cannot make fails, and says so.
    const impatient = clientOf([0, 1, 2], { requestTimeoutMs: 3000, attemptTimeoutMs: 1000 });
    await assert.rejects(
      impatient.get(keys[0].key, { r: 3 }),
      (e) => e instanceof DynamoKVError && ['QUORUM_NOT_REACHED', 'UNAVAILABLE', 'TIMEOUT'].includes(e.code),
    );
  } finally {
    cluster.resume(stopped);
  }
  // Once it answers again, reads of all three replicas succeed. (Of a key the blind put left
  // alone: that one holds two siblings for good. Which keys lead with node-2 depends on the
  // random key names, so keys[0] may be the blind one; it was, once, in CI.)
  const settled = keys.find((k) => k.key !== blind).key;
  await until(Date.now() + 15000, 'node-2 to answer again', async () => {
    const got = await client.get(settled, { r: 3 });
    return got.values.length === 1;
  });
});

test('the shopping cart example: concurrent adds with a node stopped, nothing lost', async () => {
  const child = spawn(process.execPath, [EXAMPLE], {
    env: { ...process.env, DYNAMOKV_SEEDS: cluster.seeds.join(','), DYNAMOKV_CART_HOOKS: '1' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const killer = setTimeout(() => child.kill('SIGKILL'), 60000);
  let key;
  let stopped;
  const info = await clientOf().clusterInfo();
  try {
    for await (const line of readline.createInterface({ input: child.stdout })) {
      stdout += `${line}\n`;
      const stop = /^HOOK stop-node (\S+)$/.exec(line);
      if (stop) {
        key = stop[1];
        stopped = replicasOf(info, key)[0]; // the replica the adds would go to first
        cluster.pause(stopped);
        child.stdin.write('\n');
      } else if (line === 'HOOK start-node') {
        cluster.resume(stopped);
        stopped = undefined;
        child.stdin.write('\n');
      }
    }
  } finally {
    if (stopped !== undefined) cluster.resume(stopped);
    clearTimeout(killer);
  }
  const { code, signal } = await exited;
  assert.equal(code, 0, `the example failed (signal ${signal}):\n${stdout}\n${stderr}`);
  assert.ok(key, `the example announced no stop-node hook:\n${stdout}`);
  assert.match(stdout, /a get now shows [2-9] version\(s\)/);
  assert.match(stdout, /every item added is in the cart: nothing was lost/);

  // Checked here too: the merged cart is the one version on every replica.
  const client = clientOf();
  const got = await client.get(key, { r: 3 });
  assert.equal(got.values.length, 1, strings(got.values).join(' | '));
  const items = JSON.parse(got.values[0].toString());
  assert.deepEqual([...items].sort(), ['bread', 'butter', 'coffee', 'eggs', 'milk']);
  await until(Date.now() + 10000, 'every replica to hold the merged cart only', async () => {
    const held = await Promise.all(cluster.seeds.map((a) => localSiblings(a, key)));
    return held.every((s) => s.length === 1 && s[0] === got.values[0].toString());
  });
  // And it resolves to itself: nothing left to merge.
  const again = await client.get(key, { resolver: resolvers.unionJson });
  assert.equal(again.siblings, 1);
  assert.equal(again.writtenBack, false);
});

// The cross-language context test (Python writes, Node reads and updates, Rust reads) is
// test/interop.test.js.
