#!/usr/bin/env node
// Entry point of the `tapgate` command.
import { main } from './tapgate.js';

process.exitCode = await main(process.argv.slice(2));
