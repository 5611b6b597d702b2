/**
 * Strings that come from outside (MQTT client ids and topics, request paths, reasons that quote them)
 * as they go into a log line. JSON escaping turns a newline into `\n`, so such a string cannot start a
 * line of its own (a forged `[jitr] ... ACTIVATED`), nor drive the terminal with control characters.
 */

/** JSON.stringify leaves DEL, the C1 controls and the Unicode line separators as they are: escape them too. */
const UNESCAPED_BY_JSON = /[\u007f-\u009f\u2028\u2029]/g;

const escapeRest = (json: string): string => json.replace(UNESCAPED_BY_JSON, (character) => `\\u${character.charCodeAt(0).toString(16).padStart(4, '0')}`);

/** The value JSON-quoted: `"sensor-1"`, `"a\nb"`. */
export function quoted(value: string): string {
  return escapeRest(JSON.stringify(value));
}

/** Text that may embed outside strings, escaped the same way but without quotes around it (quotes inside are kept as they are). */
export function escaped(text: string): string {
  return escapeRest(JSON.stringify(text).slice(1, -1).replace(/\\"/g, '"'));
}
