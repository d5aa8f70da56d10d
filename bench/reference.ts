/**
 * Numbers of the real OpenClaw gateway (openclaw@2026.9.6), RECORDED ELSEWHERE — not measured
 * by this harness. Copied from the raw outputs in the reference transcripts
 * (OpenClaw reference transcripts kept outside this repository: perf/*.json and their README §9): same machine class
 * (2 vCPU, 24 GiB), loopback, load generator on the same cores, 200 sequential connects after
 * 5 warm-up, 20 clients for 20 s, device modes with scopes ["operator.read"]. Only for a
 * side-by-side column; a live comparison is a `--peer` run of the same load generator.
 */
import type { Mode } from './loadgen.js';

export interface RecordedMode {
  latency: { median: number; p90: number; p99: number; max: number; connectToHelloMedian: number; source: string };
  throughput: { connectsPerSecond: number; latencyMedian: number; latencyP99: number; errors: number; gatewayCpuCores: number; source: string };
}

export interface RecordedReference {
  label: string;
  gateway: string;
  recordedAt: string;
  note: string;
  idleRssMiB: { main: number; helperChildren: number; source: string };
  modes: Record<Mode, RecordedMode>;
}

export const OPENCLAW_REFERENCE: RecordedReference = {
  label: 'openclaw (recorded)',
  gateway: 'openclaw@2026.9.6 gateway run --bind loopback --token … (gateway A, ~15 paired devices)',
  recordedAt: '2026-11-21',
  note: 'recorded elsewhere by an independent load generator; not measured in this run',
  idleRssMiB: { main: 791.3, helperChildren: 170.3, source: 'perf/idle-memory-device-token-noscopes.json (0 connections)' },
  modes: {
    'shared-deviceless': {
      latency: { median: 3.17, p90: 5.47, p99: 7.8, max: 10.03, connectToHelloMedian: 2.34, source: 'perf/latency-shared-deviceless.json' },
      throughput: {
        connectsPerSecond: 472.3,
        latencyMedian: 34.86,
        latencyP99: 61.75,
        errors: 0,
        gatewayCpuCores: 0.92,
        source: 'perf/throughput-shared-deviceless.json',
      },
    },
    'shared-device': {
      latency: { median: 13.96, p90: 20.27, p99: 41.09, max: 98.29, connectToHelloMedian: 12.02, source: 'perf/latency-shared-device.json' },
      throughput: {
        connectsPerSecond: 67.5,
        latencyMedian: 289.27,
        latencyP99: 385.99,
        errors: 0,
        gatewayCpuCores: 1.07,
        source: 'perf/throughput-shared-device.json',
      },
    },
    'device-token': {
      latency: { median: 18.04, p90: 22.64, p99: 27.96, max: 49.01, connectToHelloMedian: 16, source: 'perf/latency-device-token.json' },
      throughput: {
        connectsPerSecond: 58.6,
        latencyMedian: 333.09,
        latencyP99: 422.12,
        errors: 0,
        gatewayCpuCores: 1.09,
        source: 'perf/throughput-device-token.json',
      },
    },
  },
};
