#!/usr/bin/env node
// The bin runs the TypeScript sources through tsx so that `npm install && npm start`
// needs no build step.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../src/cli/main.ts');
const code = await main(process.argv.slice(2));
if (typeof code === 'number') process.exitCode = code;
