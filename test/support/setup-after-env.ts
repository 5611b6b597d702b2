import 'reflect-metadata';
import 'aws-sdk-client-mock-jest';

/*
 * The AWS SDK's Node.js 22 notice is turned off by AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED, which
 * global-setup.ts sets for the whole run. A test that replaces process.env with exactly a function's Lambda
 * environment (test/infra/expiry-monitor.test.ts) drops that variable, and the SDK, which reads it when a client is
 * made, then warns again. This drops that one warning only; every other warning still shows.
 */
const emitWarning = process.emitWarning.bind(process) as (...args: unknown[]) => void;
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  const text = typeof warning === 'string' ? warning : warning.message;
  if (text.startsWith('NodeVersionSupportWarning:')) return;
  emitWarning(warning, ...rest);
}) as typeof process.emitWarning;
