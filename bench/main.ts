#!/usr/bin/env node
// `npm run bench`: runs every benchmark in namespaces it creates and removes, then writes the
// results as JSON and renders docs/benchmarks.md from them. Needs root.

import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT, privilegedSkipReason } from '../test/support/env.js';
import { runActiveCleanups } from './fixture.js';
import { describeMachine, describeVersions } from './machine.js';
import { runGrantLatency } from './grant-latency.js';
import { runStorm } from './storm.js';
import { runScale } from './scale.js';
import { runDataPlane } from './data-plane.js';
import { runLaunch } from './launch.js';
import { guestUnavailableReason } from './guest-run.js';
import { RESULTS_SCHEMA, evaluateTargets, type BenchResults } from './results.js';
import { renderPage, verdictWord } from './report.js';

const USAGE = `Usage: node dist/bench/main.js [--quick] [--output FILE] [--page FILE]

Runs tapgate's benchmarks (as root) and writes their results.

  --quick        small counts and short guest runs, to check that every benchmark works;
                 the figures mean nothing
  --output FILE  JSON results (default: bench/results/latest.json, or
                 bench/results/quick.json with --quick)
  --page FILE    Markdown page rendered from the results (default: docs/benchmarks.md;
                 with --quick no page is written unless this is given)
  --help         print this help
`;

/** Counts per benchmark; the full plan meets the minimums the benchmark page promises. */
const PLANS = {
  full: {
    grants: 1000, warmup: 50,
    stormUsers: 20, stormPerUser: 25,
    scaleSteps: [0, 1024, 4096], scaleGrants: 1000, scaleSettleMs: 60_000,
    // TCG throughput varied by up to 15 % between runs of one back end. With 3 repetitions the
    // medians could not tell 0.97 from 1.0, so the ratio target gets 5.
    dataRepetitions: 5, dataSeconds: 10,
    launchRepetitions: 5,
  },
  quick: {
    grants: 20, warmup: 2,
    stormUsers: 4, stormPerUser: 5,
    scaleSteps: [0, 8, 32], scaleGrants: 20, scaleSettleMs: 1000,
    dataRepetitions: 1, dataSeconds: 2,
    launchRepetitions: 1,
  },
};

function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

async function runAll(quick: boolean): Promise<BenchResults> {
  const plan = quick ? PLANS.quick : PLANS.full;
  const startedAt = new Date().toISOString();
  const load: BenchResults['load'] = {};
  // Other processes share the CPUs and the kernel's RTNL lock, so each figure gets its load.
  const measure = async <T>(name: string, run: () => Promise<T>): Promise<T> => {
    log(name);
    const before = loadavg()[0];
    const result = await run();
    load[name] = { before, after: loadavg()[0] };
    return result;
  };

  const grantLatency = await measure('grant latency', () => runGrantLatency(plan.grants, plan.warmup));
  const storm = await measure('storm', () => runStorm(plan.stormUsers, plan.stormPerUser));
  const scale = await measure('scale', () => runScale(plan.scaleSteps, plan.scaleGrants, plan.warmup, plan.scaleSettleMs));
  log('building the guests (cached when current)');
  const guestProblem = guestUnavailableReason(REPO_ROOT);
  if (guestProblem) log(`guest benchmarks skipped: ${guestProblem}`);
  const dataPlane = await measure('data plane', () => runDataPlane(plan.dataRepetitions, plan.dataSeconds, guestProblem));
  const launch = await measure('launch', () => runLaunch(plan.launchRepetitions, guestProblem));

  const benchmarks = {
    grantLatency, storm, scale, dataPlane, launch,
    filtering: { status: 'not measured' as const, reason: 'anti-spoofing filters not implemented' },
  };
  return {
    schema: RESULTS_SCHEMA,
    mode: quick ? 'quick' : 'full',
    command: quick ? 'npm run bench -- --quick' : 'npm run bench',
    startedAt,
    finishedAt: new Date().toISOString(),
    machine: describeMachine(),
    versions: describeVersions(REPO_ROOT),
    load,
    benchmarks,
    targets: evaluateTargets(benchmarks),
  };
}

function writeFile(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
  log(`wrote ${path}`);
}

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: { quick: { type: 'boolean' }, output: { type: 'string' }, page: { type: 'string' }, help: { type: 'boolean' } },
      strict: true,
    }));
  } catch (error) {
    process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const problem = privilegedSkipReason();
  if (problem) {
    process.stderr.write(`bench: cannot run: ${problem}\n`);
    return 1;
  }
  const quick = values.quick ?? false;
  const output = resolve(values.output ?? join(REPO_ROOT, 'bench', 'results', quick ? 'quick.json' : 'latest.json'));
  const page = values.page ?? (quick ? undefined : join(REPO_ROOT, 'docs', 'benchmarks.md'));

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      log(`${signal}: removing namespaces, users and processes`);
      void runActiveCleanups().finally(() => process.exit(130));
    });
  }

  const results = await runAll(quick);
  writeFile(output, `${JSON.stringify(results, null, 2)}\n`);
  if (page !== undefined) writeFile(resolve(page), renderPage(results));
  for (const target of results.targets) {
    log(`target ${target.description} ${target.comparison} ${target.limit} ${target.unit}: ${target.value?.toFixed(3) ?? '-'} (${verdictWord(target.pass)})`);
  }
  return 0;
}

process.exitCode = await main();
