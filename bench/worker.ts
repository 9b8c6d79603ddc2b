#!/usr/bin/env node
// A measuring process started by the benchmarks (see runWorker in fixture.ts): it runs one task,
// given as JSON in its first argument, and prints the result as one JSON line on stdout.
//
// Tasks run here rather than in the orchestrating process because they need a place the
// orchestrator cannot be in: a test user's identity, or a network and private mount namespace.

import {
  measureHelperGrants, measureKernelGrants, measureLibraryGrants, type HelperGrantTask, type KernelGrantTask, type LibraryGrantTask,
} from './grant-latency.js';
import { measureScale, type ScaleTask } from './scale.js';
import { measureDataPlane, type DataPlaneTask } from './data-plane.js';
import { measureLaunch, type LaunchTask } from './launch.js';

type Task = LibraryGrantTask | KernelGrantTask | HelperGrantTask | ScaleTask | DataPlaneTask | LaunchTask;

async function runTask(task: Task): Promise<unknown> {
  switch (task.kind) {
    case 'library-grants':
      return measureLibraryGrants(task);
    case 'kernel-grants':
      return measureKernelGrants(task);
    case 'helper-grants':
      return measureHelperGrants(task);
    case 'scale':
      return measureScale(task);
    case 'data-plane':
      return measureDataPlane(task);
    case 'launch':
      return measureLaunch(task);
  }
}

const task = JSON.parse(process.argv[2] ?? 'null') as Task | null;
if (task === null || typeof task.kind !== 'string') {
  process.stderr.write('Usage: worker.js TASK_JSON (started by the benchmarks, not by hand)\n');
  process.exit(2);
}
let status = 0;
try {
  const result = await runTask(task);
  process.stdout.write(`${JSON.stringify(result)}\n`);
} catch (error) {
  process.stderr.write(`worker ${task.kind}: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`);
  status = 1;
}
// Exit even when a failed task left a child process or timer behind: runWorker kills this
// process group once the worker has exited, which ends such leftovers.
process.exit(status);
