import { TopicRules, topicMatches } from '../../../local/iot-core/topic-rules';

describe('topicMatches', () => {
  test.each([
    ['$aws/events/certificates/registered/+', '$aws/events/certificates/registered/abc', true],
    ['$aws/events/certificates/registered/+', '$aws/events/certificates/registered/abc/x', false],
    ['$aws/events/certificates/registered/+', '$aws/events/certificates/registered', false],
    ['devices/#', 'devices', true],
    ['devices/#', 'devices/a/b', true],
    ['devices/+/telemetry', 'devices/a/telemetry', true],
    ['devices/+/telemetry', 'devices/a/commands', false],
    ['a/b', 'a/b', true],
    ['a/b', 'a/c', false],
  ])('%s against %s: %s', (filter, topic, expected) => {
    expect(topicMatches(filter, topic)).toBe(expected);
  });
});

describe('TopicRules', () => {
  test('runs the action of every rule whose filter matches, with the payload', () => {
    const seen: unknown[] = [];
    const rules = new TopicRules([
      { name: 'registrations', topicFilter: '$aws/events/certificates/registered/+', action: (payload) => seen.push(payload) },
      { name: 'other', topicFilter: 'devices/#', action: () => seen.push('wrong') },
    ]);

    const ran = rules.publish('$aws/events/certificates/registered/ca1', { certificateId: 'c1' });

    expect(ran).toEqual(['registrations']);
    expect(seen).toEqual([{ certificateId: 'c1' }]);
  });
});
