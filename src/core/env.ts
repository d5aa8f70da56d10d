/** Injected clock and randomness: the core never reads Date.now() or crypto directly. */
import { randomBytes, randomUUID } from 'node:crypto';

export interface Clock {
  now(): number;
}
export interface Random {
  bytes(length: number): Buffer;
  uuid(): string;
}

export const systemClock: Clock = { now: () => Date.now() };
export const systemRandom: Random = { bytes: (n) => randomBytes(n), uuid: () => randomUUID() };

/** A clock tests can move by hand. */
export class ManualClock implements Clock {
  constructor(private ms: number) {}
  now(): number {
    return this.ms;
  }
  advance(ms: number): void {
    this.ms += ms;
  }
}
