// Starts a single memory-engine DynamoKV node for the tests (outside test/ so that
// `node --test test/` does not run it as a test file).
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const REPO = path.resolve(__dirname, '..', '..');
const LISTENING = /^dynamokv node (\S+) listening on (\S+) \(pid (\d+)/;
const METRICS = /, metrics at (\S+)\s*$/;

/** DYNAMOKV_BIN, else $CARGO_TARGET_DIR/release/dynamokv, else <repo>/target/release/dynamokv. */
function serverBinary() {
  const candidates = [
    process.env.DYNAMOKV_BIN,
    process.env.CARGO_TARGET_DIR &&
      path.join(path.resolve(REPO, process.env.CARGO_TARGET_DIR), 'release', 'dynamokv'),
    path.join(REPO, 'target', 'release', 'dynamokv'),
  ].filter(Boolean);
  const found = candidates.find((p) => fs.existsSync(p));
  if (!found) {
    throw new Error(
      `no dynamokv server binary (tried ${candidates.join(', ')}); build it with ` +
        '`cargo build --release -p dynamokv-server --bin dynamokv` or set DYNAMOKV_BIN',
    );
  }
  return found;
}

/**
 * Starts `dynamokv serve` on an ephemeral port and resolves once it prints its listening line.
 * `config` is the text of a TOML config file (e.g. "[limits]\nmax_siblings = 2\n"), which the
 * flags override; `args` are further `serve` flags (e.g. `['--join', seed]`), and `metrics`
 * serves `/metrics` on an ephemeral port too. The result has `address` ("127.0.0.1:PORT"),
 * `nodeId`, `pid`, `metricsUrl` (with `metrics`), `stop()`, which resolves when it has exited,
 * and `pause()` / `resume()`, which send SIGSTOP / SIGCONT (a hung node: alive, silent).
 */
async function startNode({
  nodeId = 'test-1',
  deadlineMs = 15000,
  config,
  args: extraArgs = [],
  metrics = false,
} = {}) {
  const bin = serverBinary();
  const args = ['serve', '--listen', '127.0.0.1:0', '--engine', 'memory', '--node-id', nodeId];
  if (metrics) args.push('--metrics-listen', '127.0.0.1:0');
  args.push(...extraArgs);
  let configDir;
  if (config !== undefined) {
    configDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dynamokv-test-'));
    const file = path.join(configDir, 'node.toml');
    fs.writeFileSync(file, config);
    args.push('--config', file);
  }
  const removeConfig = () => {
    if (configDir) fs.rmSync(configDir, { recursive: true, force: true });
  };
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  // Never leave a node behind, even when the test process dies early.
  const reap = () => {
    child.kill('SIGKILL');
    removeConfig();
  };
  process.once('exit', reap);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

  let metricsUrl;
  const address = await new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`dynamokv did not report listening within ${deadlineMs} ms; stderr: ${stderr}`));
    }, deadlineMs);
    lines.on('line', (line) => {
      const m = LISTENING.exec(line);
      if (!m) return;
      clearTimeout(timer);
      metricsUrl = METRICS.exec(line)?.[1];
      resolve(m[2]);
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`dynamokv exited early (code ${code}, signal ${signal}); stderr: ${stderr}`));
    });
  });

  let stopping;
  async function stop(deadlineMs = 10000) {
    if (!stopping) {
      stopping = (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGCONT'); // a paused node handles no SIGTERM
        child.kill('SIGTERM');
        let timer;
        const late = new Promise((resolve) => {
          timer = setTimeout(() => {
            child.kill('SIGKILL');
            resolve();
          }, deadlineMs);
        });
        await Promise.race([exited, late]);
        clearTimeout(timer);
        await exited;
        process.removeListener('exit', reap);
        removeConfig();
      })();
    }
    return stopping;
  }

  const alive = () => child.exitCode === null && child.signalCode === null;
  return {
    address,
    nodeId,
    pid: child.pid,
    metricsUrl,
    stop,
    pause: () => alive() && child.kill('SIGSTOP'),
    resume: () => alive() && child.kill('SIGCONT'),
    stderr: () => stderr,
  };
}

module.exports = { startNode, serverBinary };
