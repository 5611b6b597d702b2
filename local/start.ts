import { relative } from 'node:path';
import {
  EVERY_INTERFACE,
  LocalConfigError,
  LOCAL_ACCOUNT_ID,
  LOCAL_POLICY_NAME,
  LOCAL_REGION,
  LOCAL_THING_GROUP,
  LOOPBACK,
  LOOPBACK_NAMES,
  parseLocalModeConfig,
  PROJECT_ROOT,
  READY_LINE,
  usage,
} from './config';
import { LocalModeAlreadyRunningError } from './data-dir';
import { startLocalMode, type LocalMode } from './local-mode';

// The AWS SDK warns that its 2027 releases will need Node 22: true, and irrelevant to a local run.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const stamp = () => new Date().toISOString().slice(11, 23);
const log = (message: string) => console.log(`${stamp()} ${message}`);

const shown = (path: string) => {
  const fromRoot = relative(PROJECT_ROOT, path);
  return fromRoot.startsWith('..') ? path : fromRoot;
};

const listensOn = (address: string | undefined) => (address === EVERY_INTERFACE ? 'every interface' : (address ?? LOOPBACK));

/**
 * What a device on the LAN needs, once `--host` puts the MQTT endpoint there: where to connect (the names and
 * addresses the server certificate covers), which CA file verifies the server, and who it must be.
 */
function lanLines(mode: LocalMode): string[] {
  const { endpoints, files } = mode;
  const { port, listenAddress = LOOPBACK, serverNames = [] } = endpoints.mqtt;
  const forDevices = listenAddress === EVERY_INTERFACE ? serverNames.filter((name) => !(LOOPBACK_NAMES as readonly string[]).includes(name)) : [endpoints.mqtt.host];
  const lines = [
    '  Devices on the LAN (guide: docs/devices.md)',
    `    connect to    ${forDevices.length > 0 ? forDevices.join(' or ') : '(no non-internal IPv4 address found)'}, port ${port}, MQTT 3.1.1 over TLS (the device checks that name or address against the server certificate)`,
    `                  server certificate ${shown(files.serverCertificate)} covers ${serverNames.join(', ')}`,
    `    CA file       ${shown(files.caCertificate)}: copy it to the device, it verifies the server (never pin server.pem: it is re-issued when --host changes)`,
    "    identity      the device's key and certificate (npx iotcert device mint --id <thing> --out <dir>); client id = thing name = the certificate's CN",
    '    topics        devices/<thing>/... only; the first connect is refused while JITR registers the certificate: retry with backoff',
  ];
  if (listenAddress.startsWith('127.')) lines.push(`    note          ${listenAddress} is a loopback address: only this machine can connect. Give an address of a LAN interface, or 0.0.0.0.`);
  return lines;
}

function banner(mode: LocalMode): string {
  const { endpoints, files, config } = mode;
  const apiOnLan = config.apiHost !== undefined && config.apiHost !== LOOPBACK;
  const serversLine = apiOnLan
    ? `  The MQTT endpoint listens on ${listensOn(endpoints.mqtt.listenAddress)}, the API on ${listensOn(endpoints.api.listenAddress)} (plain HTTP: anyone on that network who has the token can call it), the CRL server on 127.0.0.1.`
    : config.host !== undefined
      ? `  The MQTT endpoint listens on ${listensOn(endpoints.mqtt.listenAddress)}; the API and CRL servers on 127.0.0.1 (--api-host moves the API).`
      : '  Every server binds to 127.0.0.1; for devices on the LAN, start with --host <address or name of this machine> or --host 0.0.0.0 (docs/devices.md).';
  const dynamo = config.dynamodbEndpoint ? `${endpoints.dynamodb.endpoint} (external)` : `${endpoints.dynamodb.endpoint} (DynamoDB Local, data in ${shown(files.dynamodb)}/)`;
  return [
    '',
    `  ${READY_LINE} (started in ${(mode.startupMs / 1000).toFixed(1)} s, pid ${process.pid})`,
    '',
    `  MQTT over TLS   ${endpoints.mqtt.url}        client certificate required; unknown ones from the CA self-register (JITR)`,
    `  Device API      ${endpoints.api.url}          Authorization: Bearer $(cat ${shown(files.apiToken)})`,
    `  CRL             ${endpoints.crl.derUrl} (DER), ${endpoints.crl.pemUrl}`,
    `  DynamoDB        ${dynamo}`,
    `                  table ${endpoints.dynamodb.deviceTable}`,
    `  CA              ${shown(files.caCertificate)} (trust this), key ${shown(files.caKey)}; CA certificate id ${endpoints.caCertificateId.slice(0, 16)}…, auto-registration on`,
    `  IoT policy      ${LOCAL_POLICY_NAME} on thing group ${LOCAL_THING_GROUP} (region ${LOCAL_REGION}, account ${LOCAL_ACCOUNT_ID}); enrollment ${config.enrollmentPolicy}`,
    `  Data folder     ${shown(files.dir)}/ (registry.json, revocations.jsonl, api-token, endpoints.json)`,
    '',
    '  Try:  npx iotcert device mint --id sensor-1 --out /tmp/sensor-1',
    '        npx iotcert device connect --id sensor-1 --dir /tmp/sensor-1',
    ...(config.host === undefined ? [] : ['', ...lanLines(mode)]),
    '',
    serversLine,
    '  DynamoDB Local has no bind option (it listens on every interface; clients use 127.0.0.1). Ctrl-C (or closing the terminal) stops cleanly.',
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  let config;
  try {
    config = parseLocalModeConfig(process.argv.slice(2));
  } catch (error) {
    if (error instanceof LocalConfigError) {
      console.error(error.message);
      process.exitCode = 2;
      return;
    }
    throw error;
  }
  if (config === 'HELP') {
    console.log(usage());
    return;
  }

  log(`[local] starting (data folder ${config.dataDir})...`);
  let mode: LocalMode;
  try {
    mode = await startLocalMode(config, { log });
  } catch (error) {
    if (error instanceof LocalConfigError) {
      // --host / --api-host: checked against this machine's addresses, before anything was touched.
      console.error(error.message);
      process.exitCode = 2;
      return;
    }
    if (error instanceof LocalModeAlreadyRunningError) {
      console.error(`${stamp()} [local] not started: the local mode is ${error.message}`);
      console.error(`${stamp()} [local] stop that one first (Ctrl-C in its terminal, or kill -TERM ${error.owner.pid}), or give this one another --data-dir.`);
      process.exitCode = 3;
      return;
    }
    throw error;
  }
  console.log(banner(mode));

  // `npm start` runs this file in node itself (`node --import tsx`), with no supervisor that could kill it
  // before it has stopped. A Ctrl-C reaches it twice: from the terminal (the whole process group) and
  // relayed by npm. So only a signal well after the first one means "exit now".
  let firstSignalAt: number | undefined;
  const shutdown = (signal: NodeJS.Signals) => {
    if (firstSignalAt !== undefined) {
      if (Date.now() - firstSignalAt < 1_000) return;
      log(`[local] ${signal} again: exiting now; registrations left pending are delivered at the next start`);
      process.exit(130);
    }
    firstSignalAt = Date.now();
    log(`[local] ${signal}: stopping (new connections refused, finishing JITR deliveries, saving the registry)...`);
    mode.stop().then(
      () => {
        log('[local] stopped cleanly');
        process.exit(0);
      },
      (error: unknown) => {
        console.error(error);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
  // Closing the terminal: stop just as cleanly, or DynamoDB Local (in its own session, out of the
  // terminal's reach) would keep running and hold its port. The terminal is gone, so writes to it may
  // fail from now on: that must not stop the shutdown.
  process.on('SIGHUP', (signal) => {
    for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);
    shutdown(signal);
  });
}

main().catch((error: unknown) => {
  console.error(`${stamp()} [local] failed to start: ${(error as Error).message}`);
  process.exit(1);
});
