#!/usr/bin/env node
/* global require */
// `npx iotcert ...`: the sources are TypeScript, so load tsx's require hook, then run the CLI.
'use strict';
/* eslint-disable @typescript-eslint/no-require-imports */
require('tsx/cjs');
require('../local/cli/iotcert.ts').run();
