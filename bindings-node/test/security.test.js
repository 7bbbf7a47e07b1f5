// Issue 11 from Node.js: a secure 3-node cluster (`dynamokv dev --secure`, TLS everywhere) and
// every way in and out of it: a client certificate or a token works; no credentials, a wrong
// token, a certificate from another authority and a plain-text client are each refused with
// their own code; read permission on a prefix; the node-to-node service refuses clients.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const { Client, DynamoKVError } = require('..');
const { serverBinary } = require('../test-support/node');

let dir;
let dev;
let seeds;
let output = '';
const cert = (name) => path.join(dir, 'certs', name);
const adminEnv = () => ({
  ...process.env,
  DYNAMOKV_CA_CERT: cert('ca.pem'),
  DYNAMOKV_CLIENT_CERT: cert('user-admin.pem'),
  DYNAMOKV_CLIENT_KEY: cert('user-admin.key'),
});

/** Runs `dynamokv <args>`; resolves to `{ ok, stdout, stderr }`. */
function run(args, env = process.env) {
  return new Promise((resolve) => {
    execFile(serverBinary(), args, { timeout: 30000, env }, (err, stdout, stderr) => {
      resolve({ ok: !err, stdout: String(stdout), stderr: String(stderr || err?.message || '') });
    });
  });
}

async function admin(...args) {
  const r = await run(['admin', ...args, '--node', seeds[0]], adminEnv());
  assert.ok(r.ok, `dynamokv admin ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const client = (options = {}) =>
  new Client(seeds, { caCert: cert('ca.pem'), requestTimeoutMs: 5000, ...options });
const asAdmin = () => client({ clientCert: cert('user-admin.pem'), clientKey: cert('user-admin.key') });

async function rejectsWith(promise, code, pattern) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof DynamoKVError, `not a DynamoKVError: ${e}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dynamokv-secure-'));
  dev = spawn(
    serverBinary(),
    ['dev', '--secure', '--nodes', '3', '--base-port', '0', '--partitions', '64', '--base-dir', dir],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const lines = readline.createInterface({ input: dev.stdout });
  seeds = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`dev --secure did not come up:\n${output}`)), 90000);
    lines.on('line', (line) => {
      output += `${line}\n`;
      const m = /^cluster up: \d+ node\(s\), seeds (\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1].split(','));
      }
    });
    dev.on('exit', (code) => reject(new Error(`dev --secure exited ${code}:\n${output}`)));
  });
});

after(async () => {
  if (dev && dev.exitCode === null) {
    const exited = new Promise((resolve) => dev.on('exit', resolve));
    dev.kill('SIGTERM');
    await exited;
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('certificate and token clients work', async () => {
  const a = asAdmin();
  await a.put('cart:js', 'apples');
  assert.deepEqual((await a.get('cart:js')).values.map(String), ['apples']);

  const out = await admin('user', 'add', 'js-bob');
  const token = /^(dkv1\.js-bob\.[0-9a-f]{64})$/m.exec(out)?.[1];
  assert.ok(token, out);
  await admin('grant', 'js-bob', 'read,write');
  const bob = client({ token });
  await bob.put('user:js', 'bob');
  assert.deepEqual((await bob.get('cart:js')).values.map(String), ['apples']);
  // PEM text in a Buffer works as well as a path.
  const pem = new Client(seeds, { caCert: fs.readFileSync(cert('ca.pem')), token });
  assert.deepEqual((await pem.get('user:js')).values.map(String), ['bob']);
});

test('each kind of stranger gets its own code', async () => {
  await rejectsWith(client().get('cart:js'), 'UNAUTHENTICATED', /no credentials/);
  await rejectsWith(
    client({ token: `dkv1.js-bob.${'0'.repeat(64)}` }).get('cart:js'),
    'UNAUTHENTICATED',
    /token is not valid/,
  );
  const other = fs.mkdtempSync(path.join(os.tmpdir(), 'dynamokv-other-'));
  try {
    assert.ok((await run(['cert', 'ca', '--dir', other])).ok);
    assert.ok((await run(['cert', 'user', 'admin', '--dir', other])).ok);
    const stranger = client({
      clientCert: path.join(other, 'user-admin.pem'),
      clientKey: path.join(other, 'user-admin.key'),
    });
    await rejectsWith(stranger.get('cart:js'), 'TLS', /refused the TLS handshake/);
    await rejectsWith(stranger.put('cart:js', 'stranger'), 'TLS');
    await rejectsWith(
      new Client(seeds, { caCert: path.join(other, 'ca.pem') }).get('cart:js'),
      'TLS',
      /we refused the certificate/,
    );
  } finally {
    fs.rmSync(other, { recursive: true, force: true });
  }
  await rejectsWith(new Client(seeds).get('cart:js'), 'UNAUTHENTICATED', /requires TLS/);
  assert.throws(
    () => new Client(seeds, { token: `dkv1.x.${'0'.repeat(64)}` }),
    (e) => e.code === 'INVALID_CONFIG' && /only over TLS/.test(e.message),
  );
});

test('read permission on cart: reads cart:1, cannot write it, cannot touch user:1', async () => {
  const a = asAdmin();
  await a.put('cart:1', 'apples');
  await a.put('user:1', 'ann');
  await admin('user', 'add', 'js-reader', '--no-token');
  assert.ok((await run(['cert', 'user', 'js-reader', '--dir', path.join(dir, 'certs')])).ok);
  await admin('grant', 'js-reader', 'read', '--prefix', 'cart:');
  const reader = client({ clientCert: cert('user-js-reader.pem'), clientKey: cert('user-js-reader.key') });
  const got = await reader.get('cart:1');
  assert.deepEqual(got.values.map(String), ['apples']);
  await rejectsWith(reader.put('cart:1', 'pears', got.context), 'PERMISSION_DENIED', /no write permission/);
  await rejectsWith(reader.get('user:1'), 'PERMISSION_DENIED', /no read permission/);
  await rejectsWith(reader.put('user:1', 'mallory'), 'PERMISSION_DENIED');
  assert.deepEqual((await a.get('cart:1')).values.map(String), ['apples']);
  assert.deepEqual((await a.get('user:1')).values.map(String), ['ann']);
});

test('the node-to-node service refuses an authenticated admin and a node of another cluster', async () => {
  // `debug-read` calls the node-to-node service's ReadLocal.
  let r = await run(['debug-read', '--node', seeds[0], '--key', 'cart:1'], adminEnv());
  assert.ok(!r.ok);
  assert.match(r.stderr, /only the nodes of cluster/);
  const other = fs.mkdtempSync(path.join(os.tmpdir(), 'dynamokv-other-'));
  try {
    assert.ok((await run(['cert', 'ca', '--dir', other, '--cluster', 'other'])).ok);
    assert.ok((await run(['cert', 'node', 'node-1', '--dir', other, '--cluster', 'other'])).ok);
    r = await run(['debug-read', '--node', seeds[0], '--key', 'cart:1'], {
      ...process.env,
      DYNAMOKV_CA_CERT: cert('ca.pem'),
      DYNAMOKV_CLIENT_CERT: path.join(other, 'node-node-1.pem'),
      DYNAMOKV_CLIENT_KEY: path.join(other, 'node-node-1.key'),
    });
    assert.ok(!r.ok);
    assert.match(r.stderr, /TLS handshake/);
  } finally {
    fs.rmSync(other, { recursive: true, force: true });
  }
});

test('a running client picks up certificate files rotated on disk', async () => {
  assert.ok((await run(['cert', 'user', 'js-nobody', '--dir', path.join(dir, 'certs')])).ok);
  const files = fs.mkdtempSync(path.join(os.tmpdir(), 'dynamokv-rotated-'));
  try {
    const [certFile, keyFile] = [path.join(files, 'client.pem'), path.join(files, 'client.key')];
    fs.copyFileSync(cert('user-js-nobody.pem'), certFile);
    fs.copyFileSync(cert('user-js-nobody.key'), keyFile);
    // Server coordination takes the seeds in turn: the next call opens a connection to
    // another node, which (tlsReloadIntervalMs 0) reads the files again.
    const c = client({
      clientCert: certFile,
      clientKey: keyFile,
      coordination: 'server',
      maxRetries: 0,
      tlsReloadIntervalMs: 0,
    });
    await rejectsWith(c.put('rotated:js', 'v'), 'PERMISSION_DENIED', /js-nobody/);
    for (const [from, to] of [[cert('user-admin.pem'), certFile], [cert('user-admin.key'), keyFile]]) {
      fs.copyFileSync(from, `${to}.staged`);
      fs.renameSync(`${to}.staged`, to);
    }
    await c.put('rotated:js', 'v');
    assert.deepEqual((await c.get('rotated:js')).values.map(String), ['v']);
  } finally {
    fs.rmSync(files, { recursive: true, force: true });
  }
});
