/**
 * `clawgate gateway run` as a real child process: started on port 0 (the OS picks a free port,
 * read back from the "listening on" line, so two test files never race for one), and killed
 * by the test's own cleanup whether the test passed or failed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';

const BIN = join(process.cwd(), 'bin', 'clawgate.js');

export interface GatewayProcess {
  child: ChildProcess;
  /** The URL it printed ("listening on <url>"). */
  url: string;
  port: number;
  out(): string;
  err(): string;
  /** Resolves with the exit code (null when a signal ended it). */
  exited: Promise<number | null>;
  /** SIGTERM (a graceful shutdown) and wait for the exit code; no-op once it has exited. */
  stop(): Promise<number | null>;
  /** SIGKILL: no shutdown at all. */
  kill(): Promise<void>;
}

export interface SpawnGatewayOptions {
  env?: Record<string, string>;
  /** How long startup may take before the process is killed and the spawn fails. */
  startupTimeoutMs?: number;
  /** Called with the process as soon as it is spawned, so a caller can register its cleanup before startup finishes. */
  onSpawn?: (p: Pick<GatewayProcess, 'kill'>) => void;
  /** The port comes from a config file under test: do not add `--port 0`. */
  portFromConfig?: boolean;
}

/** `--port 0` is added unless `args`, the environment or (with portFromConfig) a config file chose a port. */
export async function spawnGateway(args: string[], o: SpawnGatewayOptions = {}): Promise<GatewayProcess> {
  const chosen = args.includes('--port') || o.env?.CLAWGATE_PORT !== undefined || o.portFromConfig === true;
  const withPort = chosen ? args : ['--port', '0', ...args];
  const child = spawn(process.execPath, [BIN, 'gateway', 'run', ...withPort], { env: { ...process.env, ...o.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d) => (out += d));
  child.stderr?.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const alive = () => child.exitCode === null && child.signalCode === null;
  const kill = async () => {
    if (alive()) child.kill('SIGKILL');
    await exited;
  };
  o.onSpawn?.({ kill });
  const timeoutMs = o.startupTimeoutMs ?? 20_000;
  const url = await new Promise<string>((resolve, reject) => {
    const fail = (why: string) => {
      clearInterval(probe);
      clearTimeout(timer);
      reject(new Error(`clawgate gateway run ${why}:\n${out}\n${err}`));
    };
    const timer = setTimeout(() => {
      void kill();
      fail(`did not report listening within ${timeoutMs} ms`);
    }, timeoutMs);
    const probe = setInterval(() => {
      const m = /listening on (wss?:\/\/\S+)/.exec(out);
      if (m?.[1]) {
        clearInterval(probe);
        clearTimeout(timer);
        resolve(m[1]);
      }
    }, 10);
    void exited.then((code) => fail(`exited with ${code} before listening`));
  });
  return {
    child,
    url,
    port: Number(new URL(url).port),
    out: () => out,
    err: () => err,
    exited,
    async stop() {
      if (alive()) child.kill('SIGTERM');
      return exited;
    },
    kill,
  };
}
