/**
 * What the single-purpose benchmarks (automations, node-invoke, node-host) share: the
 * sequential/concurrent options, the owner credential of the gateway they spawned, the machine
 * line in their result files, and the closed-loop concurrent phase.
 */
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { readGatewayKeyFingerprint } from '../src/server/gateway-key.js';

export interface RoundTripArgs {
  sequentialN: number;
  concurrency: number;
  durationMs: number;
}

/** `--sequential N --concurrency N --duration-s S` from the command line. */
export function roundTripArgs(defaultSequential: number): RoundTripArgs {
  const { values } = parseArgs({
    options: {
      sequential: { type: 'string', default: String(defaultSequential) },
      concurrency: { type: 'string', default: '8' },
      'duration-s': { type: 'string', default: '5' },
    },
  });
  return { sequentialN: Number(values.sequential), concurrency: Number(values.concurrency), durationMs: Number(values['duration-s']) * 1000 };
}

/** connectGateway options for the owner of a fresh state dir: the credential (proven, never sent) and the gateway key it is proven to. */
export function ownerCredential(stateDir: string): OwnerOptions {
  const owner = (JSON.parse(readFileSync(join(stateDir, 'credentials.json'), 'utf8')) as { owner: string }).owner;
  return { owner, gatewayKey: readGatewayKeyFingerprint(stateDir) };
}

export interface OwnerOptions {
  owner: string;
  gatewayKey: string | null;
}

export function machineInfo(): { cpus: number; model: string; node: string } {
  return { cpus: cpus().length, model: cpus()[0]?.model ?? 'unknown', node: process.version };
}

/**
 * `concurrency` callers, each running `step` back to back until `durationMs` has passed.
 * Resolves to the elapsed seconds; a step that throws ends the run with that error.
 */
export async function closedLoop(concurrency: number, durationMs: number, step: () => Promise<void>): Promise<number> {
  const end = performance.now() + durationMs;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) await step();
    }),
  );
  return (performance.now() - t0) / 1000;
}
