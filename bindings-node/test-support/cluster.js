// Starts a real multi-node DynamoKV cluster for the tests, formed the way an operator forms one
// (and as `dynamokv dev` does, server/src/dev.rs): node-1 starts alone, the others start with
// `--join <node-1>`, and once node-1 knows them all the change is planned and committed with
// the `dynamokv admin` CLI; the cluster is ready when every node routes by the committed ring
// with no handover left. Memory engine, ephemeral ports (gRPC and metrics), no fixed sleeps:
// every wait polls against a deadline.
//
// Usable from any test (e.g. a cross-language one): `const { seeds, stop } = await
// startCluster();` then `DYNAMOKV_SEEDS=seeds.join(',')` for another process.
'use strict';

const { execFile } = require('node:child_process');
const http = require('node:http');

const { serverBinary, startNode } = require('./node');

/** Runs `dynamokv admin <args>`; resolves to `{ ok, stdout, stderr }` (never rejects). */
function admin(args, timeoutMs = 15000) {
  return new Promise((resolve) => {
    execFile(serverBinary(), ['admin', ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      resolve({ ok: !err, stdout: String(stdout), stderr: String(stderr || err?.message || '') });
    });
  });
}

/**
 * Polls `check` (async, truthy when done) every `everyMs` until it is done or `deadline`
 * (epoch ms) passes; then rejects naming `what` and the last thing `check` saw.
 */
async function until(deadline, what, check, everyMs = 100) {
  let last;
  for (;;) {
    try {
      const done = await check();
      if (done) return done;
      last = undefined;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last ? `: ${last.message ?? last}` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** GETs `url`; resolves to the body (rejects on an error status or after `timeoutMs`). */
function httpGet(url, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`GET ${url}: HTTP ${res.statusCode}`));
        else resolve(body);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** The value of `series` (metric name and labels, as exposed) in Prometheus text; 0 if absent. */
function sample(text, series) {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1).trim());
  }
  return 0;
}

/**
 * The versions node `address` holds locally of `key` (a string), read with `dynamokv
 * debug-read` (no coordination): one entry per sibling, the value as text or null for a
 * tombstone.
 */
async function localSiblings(address, key) {
  const { ok, stdout, stderr } = await new Promise((resolve) => {
    execFile(
      serverBinary(),
      ['debug-read', '--node', address, '--key', key],
      { timeout: 15000 },
      (err, out, errOut) =>
        resolve({ ok: !err, stdout: String(out), stderr: String(errOut || err?.message) }),
    );
  });
  if (!ok) throw new Error(`debug-read of ${key} on ${address} failed: ${stderr}`);
  const siblings = [];
  for (const line of stdout.split('\n')) {
    const m = /^\s+sibling \S+ write \S+ at \d+ ms: (?:tombstone|\d+ bytes (".*"))$/.exec(line);
    if (m) siblings.push(m[1] === undefined ? null : JSON.parse(m[1]));
  }
  return siblings;
}

/**
 * Starts `nodes` memory-engine nodes (node-1 .. node-N) forming one cluster. Resolves to
 * `{ seeds, nodes, ringVersion, scrape(i), counter(i, series), counters(series), stop() }`:
 * `nodes[i]` is what `startNode` returns (`address`, `nodeId`, `pause()`, `resume()`,
 * `stop()`, `metricsUrl`); `counters(series)` reads one series on every node (0 for a node
 * that is stopped or paused). On failure every node started is stopped.
 */
async function startCluster({ nodes: count = 3, deadlineMs = 60000 } = {}) {
  const deadline = Date.now() + deadlineMs;
  const nodes = [];
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.stop()));
  };
  try {
    const first = await startNode({ nodeId: 'node-1', metrics: true });
    nodes.push(first);
    const others = await Promise.all(
      Array.from({ length: count - 1 }, (_, i) =>
        startNode({ nodeId: `node-${i + 2}`, metrics: true, args: ['--join', first.address] }),
      ),
    );
    nodes.push(...others);
    const ids = nodes.map((n) => n.nodeId);

    // node-1 has heard of every node (they asked to join; gossip brings them).
    await until(deadline, `${first.nodeId} to know ${ids.join(', ')}`, async () => {
      const { ok, stdout } = await admin(['ring', '--node', first.address]);
      return ok && ids.every((id) => new RegExp(`^\\s+${id}\\s`, 'm').test(stdout));
    });

    // Plan and commit them into the ring (the plan names the version to commit from).
    const planned = await until(deadline, 'a plan that can be committed', async () => {
      const { ok, stdout, stderr } = await admin(['plan', '--node', first.address]);
      if (!ok) throw new Error(stderr);
      const m = /--ring-version (\d+)/.exec(stdout);
      if (!m) throw new Error(stdout);
      return m[1];
    });
    const committed = await admin([
      'commit',
      '--node',
      first.address,
      '--ring-version',
      planned,
    ]);
    const m = /committed ring version (\d+)/.exec(committed.stdout);
    if (!committed.ok || !m) {
      throw new Error(`admin commit failed: ${committed.stdout} ${committed.stderr}`);
    }
    const ringVersion = Number(m[1]);

    // Every node routes by that ring and has handed over what it had to.
    const settled = `every node at ring version ${ringVersion} with no handover`;
    await until(deadline, settled, async () => {
      const statuses = await Promise.all(nodes.map((n) => admin(['status', '--node', n.address])));
      return statuses.every(
        (s) =>
          s.ok &&
          s.stdout.includes(`ring version ${ringVersion},`) &&
          s.stdout.includes('no handover'),
      );
    });

    const paused = new Set();
    const scrape = (i) => httpGet(nodes[i].metricsUrl);
    const counter = async (i, series) => sample(await scrape(i), series);
    const counters = (series) =>
      Promise.all(nodes.map((n, i) => (paused.has(i) ? 0 : counter(i, series))));
    return {
      seeds: nodes.map((n) => n.address),
      nodes,
      ringVersion,
      scrape,
      counter,
      counters,
      /** SIGSTOPs node `i` (its counters then read 0). */
      pause(i) {
        paused.add(i);
        nodes[i].pause();
      },
      /** SIGCONTs node `i`. */
      resume(i) {
        nodes[i].resume();
        paused.delete(i);
      },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

module.exports = { startCluster, admin, until, httpGet, sample, localSiblings };
