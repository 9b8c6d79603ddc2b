// The shape of bench/results/*.json and the targets evaluated against it.

import type { Machine, Versions } from './machine.js';
import type { GrantLatencyResult } from './grant-latency.js';
import type { StormResult } from './storm.js';
import type { ScaleResult } from './scale.js';
import type { DataPlaneResult } from './data-plane.js';
import type { LaunchResult } from './launch.js';

export const RESULTS_SCHEMA = 1;

export interface FilteringResult {
  status: 'not measured';
  reason: string;
}

export interface Target {
  id: string;
  /** The compared figure, in the page's words. */
  description: string;
  comparison: '<=' | '>=';
  limit: number;
  unit: string;
  /** The measured figure; null when its benchmark was skipped. */
  value: number | null;
  /** Whether the figure meets the limit; null when its benchmark was skipped. */
  pass: boolean | null;
}

export interface BenchResults {
  schema: number;
  mode: 'full' | 'quick';
  command: string;
  startedAt: string;
  finishedAt: string;
  machine: Machine;
  versions: Versions;
  /** 1-minute load average just before and just after each benchmark, by benchmark name. */
  load: Record<string, { before: number; after: number }>;
  benchmarks: {
    grantLatency: GrantLatencyResult;
    storm: StormResult;
    scale: ScaleResult;
    dataPlane: DataPlaneResult;
    launch: LaunchResult;
    filtering: FilteringResult;
  };
  targets: Target[];
}

function target(id: string, description: string, comparison: Target['comparison'], limit: number, unit: string, value: number | null): Target {
  if (value === null) return { id, description, comparison, limit, unit, value, pass: null };
  const pass = comparison === '<=' ? value <= limit : value >= limit;
  return { id, description, comparison, limit, unit, value, pass };
}

/** Evaluates the project's targets against one run's figures. */
export function evaluateTargets(benchmarks: BenchResults['benchmarks']): Target[] {
  const { grantLatency, storm, scale, dataPlane, launch } = benchmarks;
  const first = scale.steps[0];
  const last = scale.steps[scale.steps.length - 1];
  return [
    target('grant-p50', 'daemon grant p50 (client library)', '<=', 0.5, 'ms', grantLatency.series.library.p50),
    target('grant-speedup', 'qemu-bridge-helper p50 / daemon grant p50', '>=', 4, 'x', grantLatency.speedupOverReference.library),
    target('scale-p99', `grant p99 with ${last.liveTaps} live taps`, '<=', 5, 'ms', last.grant.p99),
    target('scale-growth', `grant p50 with ${last.liveTaps} live taps / with ${first.liveTaps}`, '<=', 1.25, 'x', last.grant.p50 / first.grant.p50),
    target('scale-rss', `daemon RSS with ${last.liveTaps} live taps (higher of the two readings)`, '<=', 80, 'MiB', Math.max(last.daemonRssMiB, last.settledRssMiB)),
    target('storm-errors', `storm errors (${storm.requests} requests)`, '<=', 0, 'errors', storm.errors),
    target('storm-rate', 'storm grants per second', '>=', 1000, 'grants/s', storm.grantsPerSecond),
    target('data-plane', 'throughput tapgate tap / root-created tap', '>=', 0.97, 'x', dataPlane.status === 'measured' ? dataPlane.ratioToRootTap.tapgate : null),
    target('launch', 'launch to first lease, tapgate / qemu-bridge-helper', '<=', 1.05, 'x', launch.status === 'measured' ? launch.ratioToReference : null),
  ];
}
