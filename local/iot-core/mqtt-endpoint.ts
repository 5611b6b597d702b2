import { createServer, type Server, type TLSSocket } from 'node:tls';
import { Aedes, type AuthenticateError, type AuthErrorCode, type Client, type PublishPacket } from 'aedes';
import type { RegistrationEvent } from '../../functions/core/lifecycle';
import type { LocalDeviceRegistry } from '../../functions/adapters/local/local-device-registry';
import { escaped, quoted } from '../log-text';
import { IOT_CORE_LIMITS } from './limits';
import { acceptedPublishLine } from './publish-log';
import { registrationTopic, short, type CertificateGate } from './certificate-gate';
import type { ConnectionIdentity, PolicyAuthorizer } from './policy-authorizer';
import { listen } from '../listen';

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
  /** Also log each accepted publish (client id, topic, size, an escaped and shortened preview) and each message a policy kept from a subscriber. */
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
/** MQTT 3.1.1 CONNACK return code 2: "Connection Refused, identifier rejected". */
const IDENTIFIER_REJECTED = 2 as AuthErrorCode;

type SubscribePacketLike = { readonly cmd: string; readonly subscriptions?: { qos: number }[] };
let capUnavailableLogged = false;

/**
 * Caps the QoS each SUBSCRIBE asks for at what AWS IoT Core grants, before Aedes handles the packet:
 * Aedes takes the SUBACK's granted QoS from the request, not from what `authorizeSubscribe` answers
 * (which only sets the delivery QoS). Relies on the client's packet parser (`_parser`, Aedes 1.x);
 * without it, deliveries are still capped, only the SUBACK would echo the QoS asked for.
 */
function capSubscriptionQos(client: Client, log: (message: string) => void): void {
  const parser = (client as Client & { _parser?: { prependListener(event: 'packet', listener: (packet: SubscribePacketLike) => void): unknown } })._parser;
  if (!parser) {
    if (!capUnavailableLogged) log('[mqtt] warning: this Aedes version has no packet parser to cap SUBACK QoS at 1; deliveries are capped still');
    capUnavailableLogged = true;
    return;
  }
  parser.prependListener('packet', (packet) => {
    if (packet.cmd !== 'subscribe') return;
    for (const subscription of packet.subscriptions ?? []) subscription.qos = Math.min(subscription.qos, IOT_CORE_LIMITS.maxQos);
  });
}

/** Aedes authorizes a will with the packet its client keeps as `will` (untyped): tell it from a PUBLISH. */
const isWillOf = (client: Client, packet: PublishPacket): boolean => (client as Client & { will?: unknown }).will === packet;

/**
 * The MQTT-over-TLS endpoint standing in for AWS IoT Core: Aedes on `node:tls`, TLS 1.2+, a client
 * certificate required and checked against the registered CAs. It decides only what AWS IoT Core
 * decides: the TLS handshake, the certificate's registry status (with just-in-time registration of
 * unknown certificates) and the IoT policy on connect, publish, subscribe and receive.
 *
 * Refusals, like AWS IoT Core's: a certificate that is not ACTIVE has its connection closed before
 * MQTT; a CONNECT the policy refuses gets CONNACK 5 and is closed (a client id over 128 bytes: CONNACK 2);
 * a PUBLISH the policy refuses closes the connection (MQTT 3.1.1 has no negative PUBACK), and so does
 * one AWS IoT Core does not take (QoS 2, a payload over 128 KB, RETAIN without `iot:RetainPublish`);
 * a will it would refuse is dropped; a SUBSCRIBE the policy refuses gets the SUBACK failure code 0x80,
 * one it allows is granted QoS 1 at most; a message a subscriber may not receive is not delivered to it.
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

  /** Why AWS IoT Core would refuse this PUBLISH (or will) whatever the policy says, if it would. */
  const outsideLimits = (packet: PublishPacket): string | undefined => {
    if (packet.qos > IOT_CORE_LIMITS.maxQos) return `QoS ${packet.qos} is not supported (AWS IoT Core supports QoS 0 and 1)`;
    const size = typeof packet.payload === 'string' ? Buffer.byteLength(packet.payload) : packet.payload.length;
    if (size > IOT_CORE_LIMITS.maxPayloadBytes) return `the payload of ${size} bytes is over the ${IOT_CORE_LIMITS.maxPayloadBytes}-byte limit`;
    return undefined;
  };

  const broker = await Aedes.createBroker({
    maxClientsIdLength: IOT_CORE_LIMITS.maxClientIdBytes,
    connectTimeout: 10_000,
    drainTimeout: 10_000,
    heartbeatInterval: 60_000,

    authenticate: (client, _username, _password, done) => {
      const identity = identityOf(client);
      const certificate = identity ? short(identity.certificateId) : '-';
      const refuse = (returnCode: AuthErrorCode, reason: string) => {
        log(`[mqtt] CONNECT refused (client id ${quoted(client.id)}, certificate ${certificate}): ${escaped(reason)}`);
        refused.add(client);
        const error = new Error(reason) as AuthenticateError;
        error.returnCode = returnCode;
        return done(error, false);
      };
      const idBytes = Buffer.byteLength(client.id);
      if (idBytes > IOT_CORE_LIMITS.maxClientIdBytes) {
        return refuse(IDENTIFIER_REJECTED, `the client id is ${idBytes} bytes long, over the ${IOT_CORE_LIMITS.maxClientIdBytes}-byte limit (CONNACK "identifier rejected")`);
      }
      const decision = identity
        ? authorizer.authorize('iot:Connect', client.id, identity)
        : { allowed: false, reason: 'no client certificate identity on this connection' };
      if (decision.allowed) return done(null, true);
      return refuse(NOT_AUTHORIZED, decision.reason);
    },

    // Also called for a client's will, when its connection ends without DISCONNECT: a refused will is dropped.
    authorizePublish: (client, packet, done) => {
      const identity = identityOf(client);
      if (!client || !identity) return done(client ? new Error('no identity') : null); // the broker's own publishes
      const decision = outsideLimits(packet) ?? publishRefusal(packet, identity);
      if (decision === undefined) {
        if (options.verbose) log(acceptedPublishLine(client.id, packet, isWillOf(client, packet)));
        return done(null);
      }
      if (isWillOf(client, packet)) {
        log(`[mqtt] ${quoted(client.id)}: will to ${quoted(packet.topic)} dropped: ${escaped(decision)}`);
      } else {
        log(`[mqtt] ${quoted(client.id)}: PUBLISH to ${quoted(packet.topic)} refused, connection closed: ${escaped(decision)}`);
        refused.add(client);
      }
      return done(new Error('publish not authorized'));
    },

    authorizeSubscribe: (client, subscription, done) => {
      const identity = identityOf(client);
      const decision = identity
        ? authorizer.authorize('iot:Subscribe', subscription.topic, identity)
        : { allowed: false, reason: 'no identity' };
      // AWS IoT Core grants QoS 1 at most (the SUBACK says so through `capSubscriptionQos`).
      if (decision.allowed) return done(null, { ...subscription, qos: Math.min(subscription.qos, IOT_CORE_LIMITS.maxQos) as 0 | 1 });
      log(`[mqtt] ${client ? quoted(client.id) : '?'}: SUBSCRIBE to ${quoted(subscription.topic)} refused (SUBACK 0x80): ${escaped(decision.reason)}`);
      return done(null, null);
    },

    authorizeForward: (client, packet) => {
      const identity = identityOf(client);
      if (!identity) return null;
      const decision = authorizer.authorize('iot:Receive', packet.topic, identity);
      if (decision.allowed) return packet;
      if (options.verbose) log(`[mqtt] ${quoted(client.id)}: not delivered ${quoted(packet.topic)}: ${escaped(decision.reason)}`);
      return null;
    },
  });

  /** `iot:Publish`, and `iot:RetainPublish` too for a retained message; the refusal's reason, or undefined when allowed. */
  function publishRefusal(packet: PublishPacket, identity: ConnectionIdentity): string | undefined {
    const publish = authorizer.authorize('iot:Publish', packet.topic, identity);
    if (!publish.allowed) return publish.reason;
    if (!packet.retain) return undefined;
    const retain = authorizer.authorize('iot:RetainPublish', packet.topic, identity);
    return retain.allowed ? undefined : retain.reason;
  }

  broker.on('clientReady', (client) => {
    const identity = identityOf(client);
    if (!identity) return client.close();
    ready.set(client, identity);
    log(`[mqtt] ${quoted(client.id)} connected (certificate ${short(identity.certificateId)})`);
  });
  broker.on('clientDisconnect', (client) => {
    if (ready.delete(client)) log(`[mqtt] ${quoted(client.id)} disconnected`);
  });
  broker.on('clientError', (client, error) => {
    if (!refused.has(client) && !/ECONNRESET|EPIPE/.test(error.message)) log(`[mqtt] ${client.id ? quoted(client.id) : '?'}: ${escaped(error.message)}`);
  });

  // AWS IoT Core disconnects the devices of a certificate that leaves ACTIVE.
  const stopListening = registry.onCertificateStatusChange((certificateId, status) => {
    if (status === 'ACTIVE') return;
    for (const [client, identity] of ready) {
      if (identity.certificateId !== certificateId) continue;
      log(`[mqtt] ${quoted(client.id)}: certificate ${short(certificateId)} is now ${status}, connection closed`);
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
      log(`[mqtt] ${peer}: could not check the certificate (${escaped((error as Error).message)}), connection closed`);
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
    capSubscriptionQos(broker.handle(socket), log);
  }

  server.on('tlsClientError', (error, socket) => {
    // With TLS 1.3 the client often learns of a rejected certificate first and hangs up: the message is then vague.
    const peer = socket.remotePort === undefined ? 'a client' : `${socket.remoteAddress ?? '?'}:${socket.remotePort}`;
    const reason = (error as NodeJS.ErrnoException).code ?? error.message;
    log(`[mqtt] ${peer}: TLS handshake refused (${escaped(reason)}): no certificate, or one that is expired or not signed by a registered CA`);
  });

  const port = await listen(server, options.port, options.host);

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
