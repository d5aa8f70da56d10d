/**
 * Entry of a bench row inside a qemu guest (bench/vm.ts): reads the job the host wrote into the
 * shared directory, runs the row with the guest's raised open-file limit and writes the result
 * beside it. Not for direct use: `npm run bench -- --idle N --idle-vm`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { clawgateLauncher, floorLauncher } from './gateways.js';
import type { LoadProfile } from './loadgen.js';
import type { SpawnedGateway } from './proc.js';
import { idleRow, type ScaleConfig } from './scale.js';

export interface VmIdleJob {
  scale: ScaleConfig;
  profile: LoadProfile;
  floor: boolean;
}

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

async function main(): Promise<number> {
  const jobPath = process.argv[2];
  if (!jobPath) {
    process.stderr.write('usage: vm-guest.js <job.json> (written by the host side of npm run bench -- --idle-vm)\n');
    return 2;
  }
  const job = JSON.parse(readFileSync(jobPath, 'utf8')) as VmIdleJob;
  const live = new Set<SpawnedGateway>();
  const result = await idleRow(job.scale, {
    root: ROOT,
    profile: job.profile,
    log: (msg) => process.stdout.write(`${msg}\n`),
    track: (gw) => live.add(gw),
    untrack: (gw) => live.delete(gw),
    clawgate: clawgateLauncher,
    floor: job.floor ? floorLauncher : null,
  });
  await Promise.all([...live].map((g) => g.stop(2000)));
  writeFileSync(join(dirname(jobPath), 'result.json'), JSON.stringify(result));
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
