import { createServer, type Server, type TLSSocket } from 'node:tls';
import { Aedes, type AuthenticateError, type AuthErrorCode, type Client, type PublishPacket } from 'aedes';
import type { RegistrationEvent } from '../../functions/core/lifecycle';
import type { LocalDeviceRegistry } from '../../functions/adapters/local/local-device-registry';
import { escaped, quoted } from '../log-text';
import { DEFAULT_HANDSHAKE_TIMEOUT_MS, HANDSHAKE_TIMEOUT_VARIABLE, IOT_CORE_LIMITS, MAX_DECLARED_PACKET_BYTES } from './limits';
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
  /**
   * How long a connection has to finish its TLS handshake from its TCP connect, then to send its MQTT CONNECT.
   * @default - `IOTCERT_MQTT_HANDSHAKE_TIMEOUT_MS` when set, else 10,000
   */
  readonly handshakeTimeoutMs?: number;
  /**
   * Called once for each PUBLISH from a connected device that its policy and AWS IoT Core's limits accepted (never
   * for a will), as AWS IoT topic rules see device messages: `topic()`, `clientid()` and `principal()` (the certificate id).
   */
  readonly onAcceptedPublish?: (topic: string, payload: Buffer, identity: { readonly clientId: string; readonly certificateId: string }) => void;
}

export interface MqttEndpoint {
  readonly port: number;
  readonly connectedClients: () => number;
  /**
   * A message from the server itself (AWS IoT's data-plane `Publish`), delivered to the subscribers whose
   * policy lets them receive it. Resolves once the broker has taken it.
   */
  publish(topic: string, payload: string | Buffer, qos?: 0 | 1): Promise<void>;
  /** Stops accepting, closes every connection and the broker. */
  stop(): Promise<void>;
}

export type MqttEndpointErrorCode = 'INVALID_HANDSHAKE_TIMEOUT' | 'INVALID_TOPIC' | 'PAYLOAD_TOO_LARGE' | 'PACKET_TOO_LARGE';

export class MqttEndpointError extends Error {
  public readonly code: MqttEndpointErrorCode;

  public constructor(code: MqttEndpointErrorCode, message: string, options?: { readonly cause?: unknown }) {
    super(message, options);
    this.name = 'MqttEndpointError';
    this.code = code;
  }
}

const HANDSHAKE_TIMEOUT_RANGE_MS = { min: 100, max: 600_000 } as const;

/** The handshake timeout the caller gave, else `IOTCERT_MQTT_HANDSHAKE_TIMEOUT_MS`, else the default; a value out of range stops the start, naming where it came from. */
export function handshakeTimeout(given: number | undefined, env: NodeJS.ProcessEnv = process.env): number {
  const fromEnv = env[HANDSHAKE_TIMEOUT_VARIABLE];
  const [value, source] = given !== undefined ? [given, 'handshakeTimeoutMs'] : fromEnv !== undefined && fromEnv !== '' ? [Number(fromEnv), HANDSHAKE_TIMEOUT_VARIABLE] : [DEFAULT_HANDSHAKE_TIMEOUT_MS, 'default'];
  if (!Number.isInteger(value) || value < HANDSHAKE_TIMEOUT_RANGE_MS.min || value > HANDSHAKE_TIMEOUT_RANGE_MS.max) {
    const shown = given !== undefined ? String(given) : JSON.stringify(fromEnv);
    throw new MqttEndpointError('INVALID_HANDSHAKE_TIMEOUT', `${source} ${shown}: must be a whole number of milliseconds from ${HANDSHAKE_TIMEOUT_RANGE_MS.min} to ${HANDSHAKE_TIMEOUT_RANGE_MS.max}`);
  }
  return value;
}

/**
 * TLS 1.2 suites: ECDHE key exchange with an AEAD cipher (AES-GCM, ChaCha20-Poly1305) only, as AWS IoT
 * Core's current security policies offer; no CBC (Lucky13-style padding oracles, SHA-1 MACs), CCM_8
 * (a truncated tag) or ARIA. TLS 1.3 keeps OpenSSL's defaults, which are all AEAD.
 */
export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** MQTT 3.1.1 CONNACK return code 5: "Connection Refused, not authorized". */
const NOT_AUTHORIZED = 5 as AuthErrorCode;
/** MQTT 3.1.1 CONNACK return code 2: "Connection Refused, identifier rejected". */
const IDENTIFIER_REJECTED = 2 as AuthErrorCode;

type SubscribePacketLike = { readonly cmd: string; readonly subscriptions?: { qos: number }[] };

/** The parts of a client's packet parser (mqtt-packet's `Parser`, which Aedes 1.x keeps as `_parser`) the endpoint hooks into. */
interface PacketParser {
  prependListener(event: 'packet', listener: (packet: SubscribePacketLike) => void): unknown;
  /** The packet being parsed: its type and, once its fixed header is read, its remaining length. */
  readonly packet: { readonly cmd?: string; readonly length: number };
  _parseLength(): boolean;
  _emitError(error: Error): void;
}

const parserOf = (client: Client): PacketParser | undefined => {
  const parser = (client as Client & { _parser?: Partial<PacketParser> })._parser;
  return typeof parser?.prependListener === 'function' && typeof parser._parseLength === 'function' && typeof parser._emitError === 'function' ? (parser as PacketParser) : undefined;
};

let parserUnavailableLogged = false;

/**
 * Hooks the client's packet parser, before Aedes handles a packet:
 * - a packet whose fixed header declares a remaining length over `MAX_DECLARED_PACKET_BYTES` fails the
 *   parse at once, so the connection is closed before its body is buffered (the payload check in
 *   `authorizePublish` only sees a packet once the whole of it has arrived);
 * - the QoS each SUBSCRIBE asks for is capped at what AWS IoT Core grants: Aedes takes the SUBACK's
 *   granted QoS from the request, not from what `authorizeSubscribe` answers (which only sets the delivery QoS).
 * Without the parser (another Aedes version), the limits are still enforced, only later: the payload
 * once buffered, the QoS on delivery.
 */
function hookPacketParser(client: Client, onOversized: (packetType: string, declaredBytes: number) => void, log: (message: string) => void): void {
  const parser = parserOf(client);
  if (!parser) {
    if (!parserUnavailableLogged) log('[mqtt] warning: this Aedes version has no packet parser to hook: oversized packets are refused once buffered, and SUBACKs echo the QoS asked for (deliveries are capped still)');
    parserUnavailableLogged = true;
    return;
  }
  const parseLength = parser._parseLength;
  parser._parseLength = function (this: PacketParser): boolean {
    const complete = parseLength.call(this);
    if (!complete || this.packet.length <= MAX_DECLARED_PACKET_BYTES) return complete;
    const packetType = (this.packet.cmd ?? 'unknown').toUpperCase();
    onOversized(packetType, this.packet.length);
    this._emitError(new MqttEndpointError('PACKET_TOO_LARGE', `a ${packetType} declaring ${this.packet.length} bytes, over the ${MAX_DECLARED_PACKET_BYTES}-byte limit`));
    return false;
  };
  parser.prependListener('packet', (packet) => {
    if (packet.cmd !== 'subscribe') return;
    for (const subscription of packet.subscriptions ?? []) subscription.qos = Math.min(subscription.qos, IOT_CORE_LIMITS.maxQos);
  });
}

const peerOf = (socket: { readonly remoteAddress?: string; readonly remotePort?: number }): string => `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;

/** What Aedes says when a connection sends no CONNECT within `connectTimeout`. */
const AEDES_CONNECT_TIMEOUT = 'connect did not arrive in time';

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
 *
 * Against clients that hold resources without authenticating: a connection that has not finished its TLS
 * handshake within `handshakeTimeoutMs` of its TCP connect is closed, and so is one that sends no CONNECT
 * within `handshakeTimeoutMs` after it; a packet declaring more than `MAX_DECLARED_PACKET_BYTES` is refused
 * from its fixed header, before its body is read. TLS 1.2 offers AEAD suites only (`TLS12_CIPHERS`).
 */
export async function startMqttEndpoint(options: MqttEndpointOptions): Promise<MqttEndpoint> {
  const { registry, gate, authorizer, log } = options;
  const handshakeTimeoutMs = handshakeTimeout(options.handshakeTimeoutMs);
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
    connectTimeout: handshakeTimeoutMs,
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
        const will = isWillOf(client, packet);
        if (options.verbose) log(acceptedPublishLine(client.id, packet, will));
        done(null);
        if (!will) acceptedPublish(packet, identity);
        return;
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

  /** Hands an accepted device PUBLISH to `onAcceptedPublish`; what it throws is logged, never the broker's problem. */
  function acceptedPublish(packet: PublishPacket, identity: ConnectionIdentity): void {
    if (!options.onAcceptedPublish) return;
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    try {
      options.onAcceptedPublish(packet.topic, payload, { clientId: identity.clientId, certificateId: identity.certificateId });
    } catch (error) {
      log(`[mqtt] ${quoted(identity.clientId)}: the accepted-publish hook failed on ${quoted(packet.topic)}: ${escaped((error as Error).message)}`);
    }
  }

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
  // Aedes reports the errors of a connection that has not sent CONNECT yet (no client id) as `connectionError`.
  const onClientError = (client: Client, error: Error) => {
    const who = client.id ? quoted(client.id) : peerOf(client.conn as TLSSocket);
    if (error.message === AEDES_CONNECT_TIMEOUT) {
      log(`[mqtt] ${who}: no MQTT CONNECT within ${handshakeTimeoutMs} ms of the TLS handshake, connection closed`);
      return;
    }
    if (!refused.has(client) && !/ECONNRESET|EPIPE/.test(error.message)) log(`[mqtt] ${who}: ${escaped(error.message)}`);
  };
  broker.on('clientError', onClientError);
  broker.on('connectionError', onClientError);

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
      ciphers: TLS12_CIPHERS,
      honorCipherOrder: true,
      // From the TCP connect, however slowly the handshake's bytes arrive; `tlsClientError` closes the socket.
      handshakeTimeout: handshakeTimeoutMs,
    },
    (socket) => void admit(socket),
  );

  async function admit(socket: TLSSocket): Promise<void> {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => undefined); // a reset by the client is not the broker's problem
    const peer = peerOf(socket);
    // The native certificate object: `getPeerCertificate()` would also build its JavaScript description
    // (names, extensions, three fingerprints) at every connect, for the DER bytes alone.
    const certificate = socket.getPeerX509Certificate();
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
    const client = broker.handle(socket);
    hookPacketParser(
      client,
      (packetType, declaredBytes) => {
        refused.add(client);
        const who = client.id ? quoted(client.id) : peer;
        log(`[mqtt] ${who}: ${packetType} declaring ${declaredBytes} bytes refused, connection closed: over the ${MAX_DECLARED_PACKET_BYTES}-byte packet limit (payloads up to ${IOT_CORE_LIMITS.maxPayloadBytes} bytes)`);
      },
      log,
    );
  }

  server.on('tlsClientError', (error, socket) => {
    const peer = socket.remotePort === undefined ? 'a client' : peerOf(socket);
    // Node leaves the socket open after its handshake timeout when this event has a listener.
    socket.destroy();
    const reason = (error as NodeJS.ErrnoException).code ?? error.message;
    if (reason === 'ERR_TLS_HANDSHAKE_TIMEOUT') {
      log(`[mqtt] ${peer}: no TLS handshake within ${handshakeTimeoutMs} ms, connection closed`);
      return;
    }
    // With TLS 1.3 the client often learns of a rejected certificate first and hangs up: the message is then vague.
    log(`[mqtt] ${peer}: TLS handshake refused (${escaped(reason)}): no certificate, or one that is expired or not signed by a registered CA, or no TLS 1.2+ AEAD cipher suite in common`);
  });

  const port = await listen(server, options.port, options.host);

  return {
    port,
    connectedClients: () => ready.size,
    publish: (topic, payload, qos = 0) => serverPublish(broker, topic, payload, qos),
    stop: async () => {
      stopListening();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

/** A server-originated PUBLISH: subscribers get it through `authorizeForward`, so their receive policy still applies. */
function serverPublish(broker: Aedes, topic: string, payload: string | Buffer, qos: 0 | 1): Promise<void> {
  if (topic === '' || /[+#]/.test(topic) || topic.includes('\u0000') || Buffer.byteLength(topic) > 65_535) {
    return Promise.reject(new MqttEndpointError('INVALID_TOPIC', `cannot publish to ${quoted(topic)}: a topic name is 1 to 65535 bytes without wildcards (+, #)`));
  }
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  if (body.length > IOT_CORE_LIMITS.maxPayloadBytes) {
    return Promise.reject(new MqttEndpointError('PAYLOAD_TOO_LARGE', `the payload of ${body.length} bytes is over the ${IOT_CORE_LIMITS.maxPayloadBytes}-byte limit`));
  }
  return new Promise((resolve, reject) => {
    broker.publish({ cmd: 'publish', topic, payload: body, qos, retain: false, dup: false }, (error) => (error ? reject(error) : resolve()));
  });
}
