import type { PublishPacket } from 'aedes';
import { quoted } from '../log-text';

/** At most this many characters of a text payload go into a log line. */
export const LOGGED_PAYLOAD_CHARACTERS = 200;
/** At most this many bytes of a binary payload go into a log line, as hex. */
export const LOGGED_PAYLOAD_BYTES = 32;

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A payload as one log line may show it: UTF-8 text JSON-escaped (a newline or a control character
 * in it cannot start a line of its own nor drive the terminal) and cut after LOGGED_PAYLOAD_CHARACTERS;
 * anything else as the hex of its first LOGGED_PAYLOAD_BYTES bytes.
 */
export function payloadPreview(payload: Buffer | string): string {
  const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  if (bytes.length === 0) return '(empty)';
  let text: string | undefined;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    text = undefined;
  }
  if (text === undefined) {
    const shown = bytes.subarray(0, LOGGED_PAYLOAD_BYTES);
    return `0x${shown.toString('hex')}${bytes.length > shown.length ? `... (binary, ${bytes.length - shown.length} more bytes)` : ' (binary)'}`;
  }
  const characters = [...text];
  if (characters.length <= LOGGED_PAYLOAD_CHARACTERS) return quoted(text);
  const shown = characters.slice(0, LOGGED_PAYLOAD_CHARACTERS).join('');
  return `${quoted(shown)}... (${bytes.length - Buffer.byteLength(shown)} more bytes)`;
}

/** The `--verbose` line for a publish the endpoint accepted: who, where, how big, and a preview of what. */
export function acceptedPublishLine(clientId: string, packet: Pick<PublishPacket, 'topic' | 'payload' | 'qos' | 'retain'>, will: boolean): string {
  const size = typeof packet.payload === 'string' ? Buffer.byteLength(packet.payload) : packet.payload.length;
  const flags = [`QoS ${packet.qos}`, ...(packet.retain ? ['retained'] : []), `${size} byte${size === 1 ? '' : 's'}`].join(', ');
  const what = will ? 'will to' : 'PUBLISH to';
  return `[mqtt] ${quoted(clientId)}: ${what} ${quoted(packet.topic)} accepted (${flags}): ${payloadPreview(packet.payload)}`;
}
