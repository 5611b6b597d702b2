import { createServer, type Server, type TLSSocket } from 'node:tls';
import { Aedes, type AuthenticateError, type AuthErrorCode, type Client } from 'aedes';
import type { RegistrationEvent } from '../../functions/core/lifecycle';
import type { LocalDeviceRegistry } from '../../functions/adapters/local/local-device-registry';
import { registrationTopic, short, type CertificateGate } from './certificate-gate';
import type { ConnectionIdentity, PolicyAuthorizer } from './policy-authorizer';

export interface MqttEndpointOptions {
  readonly host: string;
  /** 0: any free port. */
  readonly port: number;
  readonly serverKeyPem: string;
  readonly serverCertificatePem: string;
  /** The registered CAs: a client certificate must chain to one of them. */
  readonly trustedCaPems: readonly string[];
  readonly registry: LocalDeviceRegistry;
  readonly gate: CertificateGate;
  readonly authorizer: PolicyAuthorizer;
  /** Where AWS IoT Core would publish `$aws/...` events: the topic rules. */
  readonly publishEvent: (topic: string, event: RegistrationEvent) => void;
  readonly log: (message: string) => void;
  /** Also log each message a policy kept from a subscriber. */
  readonly verbose?: boolean;
}

export interface MqttEndpoint {
  readonly port: number;
  readonly connectedClients: () => number;
  /** Stops accepting, closes every connection and the broker. */
  stop(): Promise<void>;
}

/** MQTT 3.1.1 CONNACK return code 5: "Connection Refused, not authorized". */
const NOT_AUTHORIZED = 5 as AuthErrorCode;
/** AWS IoT Core allows client ids of up to 128 bytes (MQTT 3.1's 23 is too short for thing names). */
const MAX_CLIENT_ID_LENGTH = 128;

/**
 * The MQTT-over-TLS endpoint standing in for AWS IoT Core: Aedes on `node:tls`, TLS 1.2+, a client
 * certificate required and checked against the registered CAs. It decides only what AWS IoT Core
 * decides: the TLS handshake, the certificate's registry status (with just-in-time registration of
 * unknown certificates) and the IoT policy on connect, publish, subscribe and receive.
 *
 * Refusals, like AWS IoT Core's: a certificate that is not ACTIVE has its connection closed before
 * MQTT; a CONNECT the policy refuses gets CONNACK 5 and is closed; a PUBLISH the policy refuses closes
 * the connection (MQTT 3.1.1 has no negative PUBACK); a SUBSCRIBE the policy refuses gets the
 * SUBACK failure code 0x80; a message a subscriber may not receive is not delivered to it.
 */
export async function startMqttEndpoint(options: MqttEndpointOptions): Promise<MqttEndpoint> {
  const { registry, gate, authorizer, log } = options;
  const identities = new WeakMap<object, { certificateId: string }>();
  const ready = new Map<Client, ConnectionIdentity>();
  const sockets = new Set<TLSSocket>();
  const refused = new WeakSet<Client>();

  const identityOf = (client: Client | null): ConnectionIdentity | undefined => {
    if (!client) return undefined;
    const fromTls = identities.get(client.conn);
    return fromTls && { certificateId: fromTls.certificateId, clientId: client.id };
  };

  const broker = await Aedes.createBroker({
    maxClientsIdLength: MAX_CLIENT_ID_LENGTH,
    connectTimeout: 10_000,
    drainTimeout: 10_000,
    heartbeatInterval: 60_000,

    authenticate: (client, _username, _password, done) => {
      const identity = identityOf(client);
      const decision = identity
        ? authorizer.authorize('iot:Connect', client.id, identity)
        : { allowed: false, reason: 'no client certificate identity on this connection' };
      if (decision.allowed) return done(null, true);
      log(`[mqtt] CONNECT refused (client id "${client.id}", certificate ${identity ? short(identity.certificateId) : '-'}): ${decision.reason}`);
      refused.add(client);
      const error = new Error(decision.reason) as AuthenticateError;
      error.returnCode = NOT_AUTHORIZED;
      return done(error, false);
    },

    authorizePublish: (client, packet, done) => {
      const identity = identityOf(client);
      if (!client || !identity) return done(client ? new Error('no identity') : null); // the broker's own publishes
      const decision = authorizer.authorize('iot:Publish', packet.topic, identity);
      if (decision.allowed) return done(null);
      log(`[mqtt] ${client.id}: PUBLISH to "${packet.topic}" refused, connection closed: ${decision.reason}`);
      refused.add(client);
      return done(new Error(`publish to ${packet.topic} not authorized`));
    },

    authorizeSubscribe: (client, subscription, done) => {
      const identity = identityOf(client);
      const decision = identity
        ? authorizer.authorize('iot:Subscribe', subscription.topic, identity)
        : { allowed: false, reason: 'no identity' };
      if (decision.allowed) return done(null, subscription);
      log(`[mqtt] ${client.id}: SUBSCRIBE to "${subscription.topic}" refused (SUBACK 0x80): ${decision.reason}`);
      return done(null, null);
    },

    authorizeForward: (client, packet) => {
      const identity = identityOf(client);
      if (!identity) return null;
      const decision = authorizer.authorize('iot:Receive', packet.topic, identity);
      if (decision.allowed) return packet;
      if (options.verbose) log(`[mqtt] ${client.id}: not delivered "${packet.topic}": ${decision.reason}`);
      return null;
    },
  });

  broker.on('clientReady', (client) => {
    const identity = identityOf(client);
    if (!identity) return client.close();
    ready.set(client, identity);
    log(`[mqtt] ${client.id} connected (certificate ${short(identity.certificateId)})`);
  });
  broker.on('clientDisconnect', (client) => {
    if (ready.delete(client)) log(`[mqtt] ${client.id} disconnected`);
  });
  broker.on('clientError', (client, error) => {
    if (!refused.has(client) && !/ECONNRESET|EPIPE/.test(error.message)) log(`[mqtt] ${client.id ?? '?'}: ${error.message}`);
  });

  // AWS IoT Core disconnects the devices of a certificate that leaves ACTIVE.
  const stopListening = registry.onCertificateStatusChange((certificateId, status) => {
    if (status === 'ACTIVE') return;
    for (const [client, identity] of ready) {
      if (identity.certificateId !== certificateId) continue;
      log(`[mqtt] ${client.id}: certificate ${short(certificateId)} is now ${status}, connection closed`);
      client.close();
    }
    for (const socket of sockets) if (identities.get(socket)?.certificateId === certificateId && !socket.destroyed) socket.destroy();
  });

  const server: Server = createServer(
    {
      key: options.serverKeyPem,
      cert: options.serverCertificatePem,
      ca: [...options.trustedCaPems],
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      handshakeTimeout: 10_000,
    },
    (socket) => void admit(socket),
  );

  async function admit(socket: TLSSocket): Promise<void> {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => undefined); // a reset by the client is not the broker's problem
    const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    const certificate = socket.getPeerCertificate();
    if (!certificate?.raw) {
      log(`[mqtt] ${peer}: no client certificate, connection closed`);
      socket.destroy();
      return;
    }
    let admission;
    try {
      admission = await gate.admit(certificate.raw);
    } catch (error) {
      log(`[mqtt] ${peer}: could not check the certificate (${(error as Error).message}), connection closed`);
      socket.destroy();
      return;
    }
    if (admission.kind === 'REFUSE') {
      log(`[mqtt] ${peer}: certificate ${short(admission.certificateId)} refused, connection closed: ${admission.reason}`);
      socket.destroy();
      if (admission.registration) options.publishEvent(registrationTopic(admission.registration.caCertificateId), admission.registration);
      return;
    }
    if (socket.destroyed) return;
    identities.set(socket, { certificateId: admission.certificateId });
    broker.handle(socket);
  }

  server.on('tlsClientError', (error, socket) => {
    // With TLS 1.3 the client often learns of a rejected certificate first and hangs up: the message is then vague.
    const peer = socket.remotePort === undefined ? 'a client' : `${socket.remoteAddress ?? '?'}:${socket.remotePort}`;
    const reason = (error as NodeJS.ErrnoException).code ?? error.message;
    log(`[mqtt] ${peer}: TLS handshake refused (${reason}): no certificate, or one that is expired or not signed by a registered CA`);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;

  return {
    port,
    connectedClients: () => ready.size,
    stop: async () => {
      stopListening();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
