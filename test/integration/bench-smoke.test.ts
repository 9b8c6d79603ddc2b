// The benchmark in quick mode: every benchmark runs and writes well-formed results and a page.
// It checks the shape of the output, never how fast anything was.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT, privilegedSkipReason } from '../support/env.js';
import { guestPaths } from '../support/guest.js';
import { benchGuestPaths } from '../../bench/guest-run.js';
import type { BenchResults } from '../../bench/results.js';
import type { Summary } from '../../bench/stats.js';

const RUN_TIMEOUT_MS = 15 * 60_000;

function assertPositive(value: unknown, label: string): void {
  assert.equal(typeof value, 'number', `${label} is a number`);
  assert.ok(Number.isFinite(value), `${label} is finite: ${value}`);
  assert.ok((value as number) > 0, `${label} is positive: ${value}`);
}

function assertSummary(summary: Summary, label: string): void {
  for (const key of ['count', 'p50', 'p90', 'p99', 'min', 'max', 'mean'] as const) assertPositive(summary[key], `${label}.${key}`);
  assert.ok(summary.p50 <= summary.p90, `${label}: p50 ${summary.p50} <= p90 ${summary.p90}`);
  assert.ok(summary.p90 <= summary.p99, `${label}: p90 ${summary.p90} <= p99 ${summary.p99}`);
}

/** Returns whether the run could boot guests: QEMU runs and both guests exist (the run builds them). */
function guestAvailable(): boolean {
  if (spawnSync('qemu-system-x86_64', ['--version']).status !== 0) return false;
  return [guestPaths(REPO_ROOT).kernel, guestPaths(REPO_ROOT).initramfs, benchGuestPaths(REPO_ROOT).initramfs].every((path) => existsSync(path));
}

describe('benchmark quick mode', { skip: privilegedSkipReason(), timeout: RUN_TIMEOUT_MS + 60_000 }, () => {
  let directory: string;
  let results: BenchResults;
  let page: string;
  let stderr: string;

  before(() => {
    directory = mkdtempSync(join(tmpdir(), 'tapgate-bench-smoke-'));
    const run = spawnSync(process.execPath, [
      join(REPO_ROOT, 'dist', 'bench', 'main.js'), '--quick', '--output', join(directory, 'results.json'), '--page', join(directory, 'benchmarks.md'),
    ], { encoding: 'utf8', timeout: RUN_TIMEOUT_MS });
    stderr = run.stderr;
    assert.equal(run.status, 0, `the benchmark failed (status ${run.status ?? run.signal}):\n${run.stderr}`);
    results = JSON.parse(readFileSync(join(directory, 'results.json'), 'utf8')) as BenchResults;
    page = readFileSync(join(directory, 'benchmarks.md'), 'utf8');
  });

  after(() => {
    if (directory) rmSync(directory, { recursive: true, force: true });
  });

  test('results name mode, machine and versions', () => {
    assert.equal(results.mode, 'quick');
    assert.equal(results.schema, 1);
    assert.ok(results.machine.cpuModel.length > 0);
    assertPositive(results.machine.cores, 'machine.cores');
    assertPositive(results.machine.memoryGiB, 'machine.memoryGiB');
    for (const key of ['node', 'qemu', 'kernel', 'dnsmasq', 'passt', 'iperf3'] as const) {
      assert.ok(results.versions[key].length > 0, `versions.${key} is set`);
    }
    assert.deepEqual(Object.keys(results.load).sort(), ['data plane', 'grant latency', 'launch', 'scale', 'storm']);
  });

  test('grant latency summaries are positive', () => {
    const grant = results.benchmarks.grantLatency;
    assert.equal(grant.status, 'measured');
    for (const [name, summary] of Object.entries(grant.series)) {
      assertSummary(summary, `grantLatency.series.${name}`);
      assert.equal(summary.count, grant.grantsPerSeries);
    }
    assertSummary(grant.kernelOnly, 'grantLatency.kernelOnly');
    assertSummary(grant.helperFdArrival.tapgateHelper, 'grantLatency.helperFdArrival.tapgateHelper');
    assertSummary(grant.helperFdArrival.tapgateHelperNode, 'grantLatency.helperFdArrival.tapgateHelperNode');
    assertSummary(grant.helperFdArrival.qemuBridgeHelper, 'grantLatency.helperFdArrival.qemuBridgeHelper');
    assertPositive(grant.speedupOverReference.library, 'speedupOverReference.library');
    assertPositive(grant.speedupOverReference.tapgateHelper, 'speedupOverReference.tapgateHelper');
    assertPositive(grant.speedupOverReference.tapgateHelperNode, 'speedupOverReference.tapgateHelperNode');
  });

  test('storm counts add up', () => {
    const storm = results.benchmarks.storm;
    assert.equal(storm.status, 'measured');
    assert.equal(storm.granted + storm.errors, storm.requests);
    assert.equal(storm.errors, Object.values(storm.errorsByCode).reduce((sum, count) => sum + count, 0));
    assertPositive(storm.wallMs, 'storm.wallMs');
    assertPositive(storm.grantsPerSecond, 'storm.grantsPerSecond');
    assertSummary(storm.latency, 'storm.latency');
  });

  test('scale reports every step', () => {
    const scale = results.benchmarks.scale;
    assert.equal(scale.status, 'measured');
    assert.deepEqual(scale.steps.map((step) => step.liveTaps), [0, 8, 32]);
    for (const step of scale.steps) {
      assertSummary(step.grant, `scale step ${step.liveTaps}`);
      assertSummary(step.kernelOnly, `scale step ${step.liveTaps} kernelOnly`);
      assertPositive(step.daemonRssMiB, `scale step ${step.liveTaps} daemonRssMiB`);
      assertPositive(step.settledRssMiB, `scale step ${step.liveTaps} settledRssMiB`);
      assert.ok(step.liveOnMeasuredBridge <= step.liveTaps);
    }
    assertPositive(scale.releaseMs, 'scale.releaseMs');
  });

  test('data plane measures every back end', () => {
    const data = results.benchmarks.dataPlane;
    if (data.status === 'skipped') {
      assert.equal(guestAvailable(), false, `the guest is available, yet the data plane was skipped: ${data.reason}`);
      assert.ok(data.reason.length > 0);
      return;
    }
    for (const backend of ['tapgate', 'rootTap', 'passt', 'slirp'] as const) {
      assert.equal(data.backends[backend].runsMbps.length, data.repetitions, `${backend} has one figure per repetition`);
      assertPositive(data.backends[backend].medianMbps, `${backend}.medianMbps`);
      assertPositive(data.ratioToRootTap[backend], `${backend} ratio`);
    }
    assert.equal(data.accelerator, 'tcg');
    assert.ok(data.vhost.reason.length > 0);
  });

  test('launch times both helpers', () => {
    const launch = results.benchmarks.launch;
    if (launch.status === 'skipped') {
      assert.equal(guestAvailable(), false, `the guest is available, yet the launch benchmark was skipped: ${launch.reason}`);
      assert.ok(launch.reason.length > 0);
      return;
    }
    assertPositive(launch.launchers.tapgate.medianMs, 'launch tapgate');
    assertPositive(launch.launchers.qemuBridgeHelper.medianMs, 'launch qemu-bridge-helper');
    assertPositive(launch.ratioToReference, 'launch ratio');
  });

  test('filtering is reported as not measured', () => {
    assert.deepEqual(results.benchmarks.filtering, { status: 'not measured', reason: 'anti-spoofing filters not implemented' });
  });

  test('targets carry value and verdict', () => {
    assert.equal(results.targets.length, 9);
    for (const target of results.targets) {
      if (target.value === null) {
        assert.equal(target.pass, null, `${target.id} without a value has no verdict`);
        continue;
      }
      assert.ok(Number.isFinite(target.value), `${target.id} value is finite`);
      assert.equal(typeof target.pass, 'boolean', `${target.id} has a verdict`);
    }
    assert.match(stderr, /target .*: .* \((pass|miss|not measured)\)/);
  });

  test('page has every section', () => {
    for (const heading of ['## Targets', '## Machine', '## Versions', '## Method', '## 1. Grant latency', '## 2. Storm', '## 3. Scale', '## 4. Data plane', '## 5. Launch to first lease', '## 6. Filtering cost']) {
      assert.ok(page.includes(`\n${heading}\n`), `page has "${heading}"`);
    }
    assert.match(page, /Quick mode/);
    assert.match(page, /not measured: anti-spoofing filters not implemented/);
  });
});
