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
