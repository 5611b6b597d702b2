import { escaped, quoted } from '../../../local/log-text';

describe('log text: outside strings cannot forge log lines', () => {
  test.each([
    ['sensor-1', '"sensor-1"'],
    ['a\nb', '"a\\nb"'],
    ['a\r\n00:00:00.000 [jitr] x', '"a\\r\\n00:00:00.000 [jitr] x"'],
    ['quote " and backslash \\', '"quote \\" and backslash \\\\"'],
    ['\u001b[31mred', '"\\u001b[31mred"'],
    ['c1 \u009b and separator \u2028', '"c1 \\u009b and separator \\u2028"'],
  ])('quotes %j as %s', (value, expected) => {
    expect(quoted(value)).toBe(expected);
  });

  test('escapes the control characters of a text that embeds such strings, keeping its quotes', () => {
    expect(escaped('no thing named "a\nb" is attached')).toBe('no thing named "a\\nb" is attached');
  });
});
