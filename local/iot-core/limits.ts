/**
 * AWS IoT Core's own limits that the local endpoint enforces, whatever the policy allows (AWS IoT Core
 * quotas, "Message broker and protocol limits"). Apart from the endpoint, so tests can read them
 * without loading the broker.
 */
export const IOT_CORE_LIMITS = {
  /** Client ids of up to 128 bytes (UTF-8); MQTT 3.1's 23 is too short for thing names. */
  maxClientIdBytes: 128,
  /** A PUBLISH payload of up to 128 KB. */
  maxPayloadBytes: 128 * 1024,
  /** QoS 0 and 1 only: a QoS 2 PUBLISH disconnects, a SUBSCRIBE is granted QoS 1 at most. */
  maxQos: 1,
} as const;

/**
 * The largest remaining length a packet may declare in its fixed header: a PUBLISH with the largest
 * payload, the longest topic MQTT can encode (2 + 65,535 bytes) and a packet id. A packet declaring more
 * is refused from its fixed header, before its body is buffered; under it, the exact payload check
 * decides, so this never refuses a packet that check would take.
 */
export const MAX_DECLARED_PACKET_BYTES = IOT_CORE_LIMITS.maxPayloadBytes + 2 + 65_535 + 2;

/**
 * How long a connection has, from its TCP connect, to finish the TLS handshake and have its MQTT
 * CONNECT accepted: a connection that never gets there would otherwise hold a socket forever.
 */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

/** The environment variable that sets the handshake timeout when the endpoint's caller does not (tests shorten it). */
export const HANDSHAKE_TIMEOUT_VARIABLE = 'IOTCERT_MQTT_HANDSHAKE_TIMEOUT_MS';
