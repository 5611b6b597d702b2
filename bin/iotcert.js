#!/usr/bin/env node
/* global require, __dirname, process, console */
// `npx iotcert ...`: the sources are TypeScript, so load tsx's require hook, then run the CLI.
'use strict';
/* eslint-disable @typescript-eslint/no-require-imports */
const { existsSync } = require('node:fs');
const { join } = require('node:path');
// The CLI drives the local mode of a clone of the repository; the installable package (npm pack) carries only the construct.
if (!existsSync(join(__dirname, '..', 'local', 'cli', 'iotcert.ts'))) {
  console.error('iotcert runs from a clone of the iot-certificate-lifecycle repository (npm ci, then npx iotcert ...); the installed package carries only the CDK construct.');
  process.exit(2);
}
require('tsx/cjs');
require('../local/cli/iotcert.ts').run();
