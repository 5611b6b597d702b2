/**
 * The IoT rules the lifecycle relies on, reduced to what they do here: `SELECT * FROM '<filter>'`
 * with an action that receives the message as JSON.
 */
export interface TopicRule {
  readonly name: string;
  /** An MQTT topic filter (`+` one level, `#` the rest). */
  readonly topicFilter: string;
  /** `sender`: for a device's message, what `clientid()` and `principal()` answer in a rule (absent for AWS IoT's own events). */
  readonly action: (payload: unknown, topic: string, sender?: MessageSender) => void;
}

export interface MessageSender {
  readonly clientId: string;
  /** The certificate id of the sender's connection. */
  readonly principal: string;
}

/** MQTT topic filter matching (MQTT 3.1.1 §4.7). */
export function topicMatches(filter: string, topic: string): boolean {
  const filterLevels = filter.split('/');
  const topicLevels = topic.split('/');
  for (const [index, level] of filterLevels.entries()) {
    if (level === '#') return true; // the parent level too: `a/#` matches `a`
    if (index >= topicLevels.length) return false;
    if (level !== '+' && level !== topicLevels[index]) return false;
  }
  return filterLevels.length === topicLevels.length;
}

export class TopicRules {
  public constructor(private readonly rules: readonly TopicRule[]) {}

  /** Runs every rule whose filter matches `topic`; answers the names of the rules that ran. */
  public publish(topic: string, payload: unknown, sender?: MessageSender): string[] {
    const matched = this.rules.filter((rule) => topicMatches(rule.topicFilter, topic));
    for (const rule of matched) rule.action(payload, topic, sender);
    return matched.map((rule) => rule.name);
  }
}
