import { acceptedPublishLine, LOGGED_PAYLOAD_BYTES, LOGGED_PAYLOAD_CHARACTERS, payloadPreview } from '../../../local/iot-core/publish-log';

describe('the --verbose line of an accepted publish', () => {
  test('names the client id, topic, QoS and size, with the payload quoted', () => {
    const line = acceptedPublishLine('sensor-1', { topic: 'devices/sensor-1/telemetry', payload: Buffer.from('{"t":21.5}'), qos: 1, retain: false }, false);
    expect(line).toBe('[mqtt] "sensor-1": PUBLISH to "devices/sensor-1/telemetry" accepted (QoS 1, 10 bytes): "{\\"t\\":21.5}"');
  });

  test('says when it is retained, or a will', () => {
    expect(acceptedPublishLine('d', { topic: 't', payload: Buffer.from('x'), qos: 0, retain: true }, false)).toContain('(QoS 0, retained, 1 byte)');
    expect(acceptedPublishLine('d', { topic: 't', payload: 'bye', qos: 0, retain: false }, true)).toContain('"d": will to "t" accepted');
  });

  test('a payload, client id or topic cannot start a log line of its own nor carry terminal controls', () => {
    const line = acceptedPublishLine('a\nb', { topic: 'x\r\n[jitr] forged', payload: Buffer.from('line one\n[jitr] certificate ACTIVATED\u001b[2J\u2028'), qos: 1, retain: false }, false);
    for (const control of ['\n', '\r', '\u001b', '\u2028']) expect(line).not.toContain(control);
    expect(line).toContain('\\n[jitr] certificate ACTIVATED\\u001b[2J\\u2028');
  });

  test('a long text payload is cut, saying how much is left out', () => {
    const payload = 'é'.repeat(LOGGED_PAYLOAD_CHARACTERS + 10);
    const preview = payloadPreview(Buffer.from(payload));
    expect(preview).toBe(`"${'é'.repeat(LOGGED_PAYLOAD_CHARACTERS)}"... (20 more bytes)`);
  });

  test('a binary payload shows as the hex of its first bytes; an empty one says so', () => {
    const binary = Buffer.alloc(LOGGED_PAYLOAD_BYTES + 8, 0xff);
    expect(payloadPreview(binary)).toBe(`0x${'ff'.repeat(LOGGED_PAYLOAD_BYTES)}... (binary, 8 more bytes)`);
    expect(payloadPreview(Buffer.from([0xc3]))).toBe('0xc3 (binary)');
    expect(payloadPreview(Buffer.alloc(0))).toBe('(empty)');
  });
});
