/** The real OpenClaw (Node 24 + openclaw@2026.9.6) the interop tests drive, and the environment it runs in. */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

/** CLAWGATE_OPENCLAW_NODE / CLAWGATE_OPENCLAW_CLI, else what scripts/openclaw-cache.sh installs (and prints). */
export function openclawPaths(): { node: string; cli: string } {
  let node = process.env.CLAWGATE_OPENCLAW_NODE;
  let cli = process.env.CLAWGATE_OPENCLAW_CLI;
  if (!node || !cli) {
    const out = execFileSync('bash', [join(process.cwd(), 'scripts', 'openclaw-cache.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    node = /^NODE24=(.*)$/m.exec(out)?.[1];
    cli = /^OPENCLAW=(.*)$/m.exec(out)?.[1];
  }
  assert.ok(node && cli, 'scripts/openclaw-cache.sh must print NODE24= and OPENCLAW=');
  return { node, cli };
}

/**
 * The environment of one OpenClaw install living in `home` (a fresh home is a fresh device key):
 * nothing inherited but PATH, no colours in the output, no self-update (no traffic off the machine).
 */
export function openclawEnv(home: string, extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: process.env.PATH ?? '', HOME: home, OPENCLAW_STATE_DIR: join(home, 'state'), OPENCLAW_NO_AUTO_UPDATE: '1', NO_COLOR: '1', ...extra };
}

const run = promisify(execFile);

/**
 * `openclaw <args> --json` from the install in `home`, pointed at `gateway` the way the docs show:
 * OPENCLAW_GATEWAY_URL and OPENCLAW_GATEWAY_TOKEN in its environment, never the secret on argv
 * (the openclaw CLI reads env credentials only with the env URL, not with `--url`).
 */
export async function openclawJson(oc: { node: string; cli: string }, home: string, gateway: { url: string; token: string }, args: string[]): Promise<unknown> {
  const r = await run(oc.node, [oc.cli, ...args, '--json'], { env: openclawGatewayEnv(home, gateway), timeout: 60_000 });
  return JSON.parse(r.stdout.slice(r.stdout.search(/^[{[]/m))) as unknown;
}

/** openclawEnv plus the gateway to talk to and its credential, in the variables the openclaw CLI reads. */
export function openclawGatewayEnv(home: string, gateway: { url: string; token: string }): Record<string, string> {
  return openclawEnv(home, { OPENCLAW_GATEWAY_URL: gateway.url, OPENCLAW_GATEWAY_TOKEN: gateway.token });
}
