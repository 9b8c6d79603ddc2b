#!/usr/bin/env node
// Entry point of `tapgate-helper`, the qemu-bridge-helper replacement.
import { runHelper } from './helper.js';

process.exitCode = runHelper(process.argv.slice(2));
