#!/usr/bin/env node
// The Dynamo paper's shopping cart (sections 4.4 and 6.1) with the DynamoKV Node.js SDK: two
// sessions add items to the same cart concurrently, from the same (soon stale) version, and
// one node of the cluster may be down meanwhile. The writes become siblings; the built-in
// union resolver merges them and writes the merge back, so no item added is ever lost.
//
//   make run                                   # a 3-node cluster on 127.0.0.1:7070..7072
//   DYNAMOKV_SEEDS=127.0.0.1:7070,127.0.0.1:7071,127.0.0.1:7072 node examples/node/shopping_cart.js
//
// To see the adds succeed with a node down, stop one node (kill -STOP <pid>, `make run` prints
// the pids) before running it, and resume it (kill -CONT) afterwards. With
// DYNAMOKV_CART_HOOKS=1 the example instead pauses around the concurrent adds: it prints
// `HOOK stop-node <key>` and waits for a line on stdin, then after the adds `HOOK start-node`
// and waits again (the SDK's test suite stops and resumes a node there).
//
// The SDK is found as the `dynamokv` package, else from this repository's bindings-node/ (build
// it with `npm install` there). Exits non-zero if any added item is missing.
'use strict';

const assert = require('node:assert/strict');
const path = require('node:path');
const readline = require('node:readline');

function sdk() {
  try {
    return require('dynamokv');
  } catch (e) {
    if (e.code !== 'MODULE_NOT_FOUND') throw e;
    return require(path.join(__dirname, '..', '..', 'bindings-node'));
  }
}

const { Client, resolvers } = sdk();

const seeds = (process.env.DYNAMOKV_SEEDS || '127.0.0.1:7070')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);

// A hung node answers nothing: give each node 2.5 s (above a node's own 2 s replica timeout),
// the call as a whole 15 s.
const OPTIONS = { attemptTimeoutMs: 2500, requestTimeoutMs: 15000 };
// A secure cluster (`dynamokv dev --secure` sets these for its --exec command).
for (const [option, name] of [
  ['caCert', 'DYNAMOKV_CA_CERT'],
  ['clientCert', 'DYNAMOKV_CLIENT_CERT'],
  ['clientKey', 'DYNAMOKV_CLIENT_KEY'],
  ['token', 'DYNAMOKV_TOKEN'],
]) {
  if (process.env[name]) OPTIONS[option] = process.env[name];
}

const lines = process.env.DYNAMOKV_CART_HOOKS === '1'
  ? readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
  : null;

/** With DYNAMOKV_CART_HOOKS=1: announces `what` and waits for a line on stdin. */
async function hook(what) {
  if (!lines) return;
  console.log(`HOOK ${what}`);
  const { done } = await lines.next();
  if (done) throw new Error(`stdin closed while waiting after HOOK ${what}`);
}

const show = (buf) => (buf === null ? 'nothing' : buf.toString('utf8'));
const cart = (items) => JSON.stringify(items);

/** One shopper's session: its own client, reading the cart and adding to what it read. */
class Session {
  constructor(name) {
    this.name = name;
    this.client = new Client(seeds, OPTIONS);
  }

  /** Reads the cart: its items (every sibling merged by union) and the context to write with. */
  async open(key) {
    const got = await this.client.get(key, { resolver: resolvers.unionJson, writeBack: false });
    this.items = got.value === null ? [] : JSON.parse(got.value.toString('utf8'));
    this.context = got.context;
    console.log(`${this.name}: opened the cart: ${cart(this.items)}`);
  }

  /** Adds `item` to the cart as this session last saw it (a put with its context). */
  async add(key, item) {
    const started = Date.now();
    this.items = [...this.items, item];
    this.context = await this.client.put(key, cart(this.items), this.context, { w: 2 });
    console.log(`${this.name}: added ${JSON.stringify(item)} in ${Date.now() - started} ms`);
  }
}

async function main() {
  const admin = await Client.connect(seeds, OPTIONS);
  const info = await admin.clusterInfo();
  console.log(
    `cluster ${JSON.stringify(info.clusterName)}: ${info.members.length} node(s), N = ${info.n}, ` +
      `R = ${info.r}, W = ${info.w}, ring version ${info.ringVersion}`,
  );
  const key = `cart:node-example:${process.pid}:${Date.now()}`;

  // The cart starts with one item.
  await admin.put(key, cart(['milk']));
  console.log(`created ${key}: ${cart(['milk'])}`);

  // Two sessions open the same version of the cart.
  const alice = new Session('alice');
  const bob = new Session('bob');
  await alice.open(key);
  await bob.open(key);

  await hook(`stop-node ${key}`);
  // Both add at once, each to the version it read: neither knows of the other's adds.
  await Promise.all([
    (async () => {
      await alice.add(key, 'eggs');
      await alice.add(key, 'coffee');
    })(),
    (async () => {
      await bob.add(key, 'bread');
      await bob.add(key, 'butter');
    })(),
  ]);
  await hook('start-node');

  // Concurrent versions: a plain get shows the siblings.
  const raw = await admin.get(key);
  console.log(`a get now shows ${raw.values.length} version(s):`);
  for (const [i, v] of raw.values.entries()) {
    console.log(`  ${show(v)} (written at ${new Date(raw.timestampsMs[i]).toISOString()})`);
  }
  assert.ok(raw.values.length >= 2, 'the concurrent adds should have made siblings');

  // The union resolver merges them and writes the merge back (one version again).
  const merged = await admin.get(key, { resolver: resolvers.unionJson });
  console.log(
    `resolved ${merged.siblings} version(s) by union: ${show(merged.value)}` +
      `${merged.writtenBack ? ', written back' : ''}`,
  );
  const items = JSON.parse(merged.value.toString('utf8'));
  for (const item of ['milk', 'eggs', 'coffee', 'bread', 'butter']) {
    assert.ok(items.includes(item), `${item} was lost: ${cart(items)}`);
  }
  assert.equal(items.length, 5, `an item appears twice: ${cart(items)}`);
  const after = await admin.get(key);
  assert.equal(after.values.length, 1, 'the write-back should leave one version');
  console.log(`a get now shows one version: ${show(after.values[0])}`);
  console.log('every item added is in the cart: nothing was lost');
}

main()
  .then(() => process.exit(0))
  .catch((e) => {
    console.error(`shopping cart example failed: ${e.code ? `[${e.code}] ` : ''}${e.message}`);
    process.exit(1);
  });
