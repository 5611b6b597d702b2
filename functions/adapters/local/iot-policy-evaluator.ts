import type { IotPolicyDocument, IotPolicyStatement } from '../../policy/fleet-policy';

/**
 * Evaluates AWS IoT Core policies the way AWS IoT Core does, for the subset this project uses,
 * so the local broker can enforce them on connect, publish, subscribe and receive. Pure: no I/O.
 *
 * What it follows (AWS IoT Core developer guide: "AWS IoT Core policy variables", "Thing policy
 * variables", "Publish/Subscribe policy examples", "AWS IoT Core action resources"; IAM user guide:
 * "Policy evaluation logic", "Condition operators", "Variables and tags"):
 * - default deny; a matching Deny wins over any Allow; an Allow needs a matching statement whose
 *   Condition holds;
 * - actions match case-insensitively, with `*` and `?` wildcards (`*`, `iot:*`, `iot:Pub*`);
 * - resources are ARNs matched segment by segment; within a segment `*` matches any sequence
 *   (including `/`) and `?` one character; case-sensitive. MQTT's `+` and `#` are plain characters:
 *   a subscription to `a/#` is the resource `topicfilter/a/#`;
 * - policy variables in Resource and Condition values are replaced by the request's values, which
 *   are literal (a `*` in a client id is not a wildcard). A variable with no value (thing name when
 *   no thing is associated with the connection) makes the statement not match: it never becomes a
 *   wildcard or an empty string. `${*}`, `${?}` and `${$}` stand for the literal characters;
 * - conditions: operators AND, keys AND, values OR (NOR for a negated operator); a key absent from
 *   the request makes a condition false, and a negated one (`StringNotEquals`) true. Condition keys:
 *   `iot:Connection.Thing.IsAttached`, `iot:Connection.Thing.ThingName`, `iot:ClientId` and
 *   `iot:Certificate.Subject.OrganizationalUnit` (the subject's first OU; absent without one);
 * - `NotResource`: the statement covers every resource none of its patterns matches (AWS IoT Core's
 *   publish/subscribe policy examples use it for "all topics except").
 *
 * Where it cannot evaluate something AWS would (an operator, condition key or variable outside the
 * subset) it fails closed: such an Allow grants nothing and such a Deny applies.
 */

/**
 * The MQTT actions AWS IoT Core authorizes. `iot:RetainPublish` is checked, in addition to
 * `iot:Publish`, for a PUBLISH (or a will) with the RETAIN flag; its resource is the topic.
 */
export type IotAction = 'iot:Connect' | 'iot:Publish' | 'iot:RetainPublish' | 'iot:Subscribe' | 'iot:Receive';

/** The connection the request comes from: what AWS IoT Core knows when it evaluates policy variables. */
export interface IotRequestContext {
  readonly region: string;
  readonly accountId: string;
  /** @default 'aws' */
  readonly partition?: string;
  /** The MQTT client id: `iot:ClientId`. */
  readonly clientId: string;
  /**
   * `iot:Connection.Thing.ThingName`: set only when the connection is associated with a thing,
   * i.e. the client id equals the name of a thing attached to the certificate. Absent otherwise.
   */
  readonly thingName?: string;
  /** `iot:Connection.Thing.IsAttached`. */
  readonly thingAttached: boolean;
  /** `iot:CertificateId`: the certificate's id (SHA-256 of its DER, lower-case hex). */
  readonly certificateId: string;
  /**
   * The OU values of the certificate's subject, in order: `iot:Certificate.Subject.OrganizationalUnit` is the first
   * (AWS IoT Core: "the policy variables for each multi-value attribute return the first value"). Absent or empty: the
   * certificate has no OU, and a condition on the key is a condition on an absent key.
   */
  readonly subjectOrganizationalUnits?: readonly string[];
}

export interface IotAuthorization {
  readonly allowed: boolean;
  /** Which statement allowed or denied, or why none allowed: for the broker's logs. */
  readonly reason: string;
}

const RESOURCE_TYPES: Readonly<Record<IotAction, string>> = {
  'iot:Connect': 'client',
  'iot:Publish': 'topic',
  'iot:RetainPublish': 'topic',
  'iot:Receive': 'topic',
  'iot:Subscribe': 'topicfilter',
};

/**
 * The ARN AWS IoT Core authorizes `action` against: `client/<clientId>` for Connect,
 * `topic/<topic>` for Publish, RetainPublish and Receive, `topicfilter/<filter>` for Subscribe.
 */
export function resourceArn(action: IotAction, resource: string, context: IotRequestContext): string {
  return `arn:${context.partition ?? 'aws'}:iot:${context.region}:${context.accountId}:${RESOURCE_TYPES[action]}/${resource}`;
}

/**
 * Decides whether `action` on `resource` (a client id, topic name or topic filter) is allowed by
 * `policies` for a connection described by `context`.
 */
export function authorize(
  policies: readonly IotPolicyDocument[],
  action: IotAction,
  resource: string,
  context: IotRequestContext,
): IotAuthorization {
  const arn = resourceArn(action, resource, context);
  const request: Request = { action, arn: splitRequestArn(arn), context };
  let allowedBy: string | undefined;
  const notes: string[] = [];

  for (const [policyIndex, policy] of policies.entries()) {
    for (const [statementIndex, statement] of policy.Statement.entries()) {
      const where = `policy[${policyIndex}].Statement[${statementIndex}]`;
      const outcome = evaluateStatement(statement, request);
      if (statement.Effect === 'Deny') {
        if (outcome.kind === 'match') return { allowed: false, reason: `${action} on ${arn} explicitly denied by ${where} (${outcome.detail})` };
        if (outcome.kind === 'unsupported') {
          return { allowed: false, reason: `${action} on ${arn} denied by ${where}, a Deny that cannot be evaluated: ${outcome.detail}` };
        }
      } else if (outcome.kind === 'match') {
        allowedBy ??= `${action} on ${arn} allowed by ${where} (${outcome.detail})`;
      } else if (outcome.kind !== 'not-applicable') {
        notes.push(`${where}: ${outcome.detail}`);
      }
    }
  }

  if (allowedBy !== undefined) return { allowed: true, reason: allowedBy };
  const why = policies.length === 0 ? ' (no policies)' : notes.length > 0 ? `: ${notes.join('; ')}` : '';
  return { allowed: false, reason: `${action} on ${arn} not allowed by any statement${why}` };
}

interface Request {
  readonly action: IotAction;
  readonly arn: ArnSegments;
  readonly context: IotRequestContext;
}

/**
 * How one statement relates to the request. `not-applicable`: its actions do not cover the request.
 * `no-match`: the actions do, but a resource or condition does not hold. `unsupported`: it relies on
 * something outside the supported subset, so it cannot be decided (fails closed).
 */
type StatementOutcome =
  | { readonly kind: 'match'; readonly detail: string }
  | { readonly kind: 'not-applicable' }
  | { readonly kind: 'no-match' | 'unsupported'; readonly detail: string };

function evaluateStatement(statement: IotPolicyStatement, request: Request): StatementOutcome {
  const actions = asList(statement.Action);
  if (!actions.some((pattern) => matchesAction(pattern, request.action))) return { kind: 'not-applicable' };

  const resources = statement.NotResource === undefined ? evaluateResources(asList(statement.Resource), request) : evaluateNotResources(asList(statement.NotResource), request);
  if (resources.kind !== 'match') return resources;

  const condition = evaluateCondition(statement.Condition ?? {}, request.context);
  if (condition.kind !== 'match') return condition;
  return { kind: 'match', detail: `Resource ${resources.detail}${condition.detail}` };
}

function asList(value: string | readonly string[]): readonly string[] {
  return typeof value === 'string' ? [value] : value;
}

// ---------------------------------------------------------------------------------------------
// Actions

function matchesAction(pattern: string, action: IotAction): boolean {
  return globMatches(literalPattern(pattern.toLowerCase()), action.toLowerCase());
}

// ---------------------------------------------------------------------------------------------
// Resources

/** An ARN cut into its five fixed segments and the resource part (which may itself hold `:`). */
type ArnSegments = readonly [partition: string, service: string, region: string, account: string, resource: string];

function splitRequestArn(arn: string): ArnSegments {
  const parts = splitArn(arn, (text, from) => text.indexOf(':', from));
  if (parts?.[0] !== 'arn') throw new Error(`Not an ARN: ${arn}`);
  const [, partition = '', service = '', region = '', account = '', resource = ''] = parts;
  return [partition, service, region, account, resource];
}

/** Splits at the first five colons found by `nextColon`; undefined when there are fewer. */
function splitArn(text: string, nextColon: (text: string, from: number) => number): string[] | undefined {
  const parts: string[] = [];
  let start = 0;
  while (parts.length < 5) {
    const colon = nextColon(text, start);
    if (colon < 0) return undefined;
    parts.push(text.slice(start, colon));
    start = colon + 1;
  }
  parts.push(text.slice(start));
  return parts;
}

/** The next `:` that is not inside a `${...}` policy variable (such as `${iot:ClientId}`). */
function nextColonOutsideVariables(text: string, from: number): number {
  for (let index = from; index < text.length; index += 1) {
    if (text.startsWith('${', index)) {
      const end = text.indexOf('}', index);
      if (end < 0) return -1;
      index = end;
    } else if (text[index] === ':') {
      return index;
    }
  }
  return -1;
}

type ResourceOutcome =
  | { readonly kind: 'match' | 'mismatch' }
  | { readonly kind: 'unresolved' | 'unsupported'; readonly detail: string };

/** Any pattern matching is enough; otherwise say why, unresolved variables first (the likely surprise). */
function evaluateResources(patterns: readonly string[], request: Request): StatementOutcome {
  const outcomes = patterns.map((pattern) => ({ pattern, ...evaluateResource(pattern, request) }));
  const matched = outcomes.find((outcome) => outcome.kind === 'match');
  if (matched !== undefined) return { kind: 'match', detail: matched.pattern };
  const unsupported = outcomes.find((outcome) => outcome.kind === 'unsupported');
  if (unsupported !== undefined) return { kind: 'unsupported', detail: `Resource ${unsupported.pattern}: ${detailOf(unsupported)}` };
  const unresolved = outcomes.filter((outcome) => outcome.kind === 'unresolved').map((outcome) => `Resource ${outcome.pattern}: ${detailOf(outcome)}`);
  if (unresolved.length > 0) return { kind: 'no-match', detail: unresolved.join('; ') };
  return { kind: 'no-match', detail: `Resource does not match (${patterns.join(', ')})` };
}

/**
 * `NotResource`: the statement applies to every resource none of the patterns matches. A pattern that cannot be
 * evaluated makes the statement unsupported (a Deny then applies: fail closed); one whose variable has no value matches
 * nothing, so it excludes nothing.
 */
function evaluateNotResources(patterns: readonly string[], request: Request): StatementOutcome {
  const outcomes = patterns.map((pattern) => ({ pattern, ...evaluateResource(pattern, request) }));
  const unsupported = outcomes.find((outcome) => outcome.kind === 'unsupported');
  if (unsupported !== undefined) return { kind: 'unsupported', detail: `NotResource ${unsupported.pattern}: ${detailOf(unsupported)}` };
  const excluded = outcomes.find((outcome) => outcome.kind === 'match');
  if (excluded !== undefined) return { kind: 'no-match', detail: `NotResource excludes it (${excluded.pattern})` };
  return { kind: 'match', detail: `not in NotResource (${patterns.join(', ')})` };
}

function detailOf(outcome: ResourceOutcome): string {
  return 'detail' in outcome ? outcome.detail : '';
}

/** IAM matches an ARN segment by segment, so a wildcard never spans the colons between them. */
function evaluateResource(pattern: string, request: Request): ResourceOutcome {
  if (pattern === '*') return { kind: 'match' };
  const parts = splitArn(pattern, nextColonOutsideVariables);
  if (parts?.[0] !== 'arn') return { kind: 'mismatch' };
  for (const [index, segment] of parts.slice(1).entries()) {
    const compiled = compilePattern(segment, request.context);
    if (compiled.kind === 'unsupported') return compiled;
    if (compiled.kind === 'unresolved') return { kind: 'unresolved', detail: unresolvedDetail(compiled.variable) };
    if (!globMatches(compiled.tokens, request.arn[index] ?? '')) return { kind: 'mismatch' };
  }
  return { kind: 'match' };
}

function unresolvedDetail(variable: string): string {
  return `policy variable \${${variable}} has no value for this connection`;
}

// ---------------------------------------------------------------------------------------------
// Policy variables and wildcard patterns

/** A wildcard pattern: literal code points, `*` (any sequence) and `?` (one code point). */
type Token = { readonly kind: 'literal'; readonly char: string } | { readonly kind: 'star' } | { readonly kind: 'one' };

/** Why a text with policy variables cannot be used: a variable without a value, or one outside the subset. */
type Unusable = { readonly kind: 'unresolved'; readonly variable: string } | { readonly kind: 'unsupported'; readonly detail: string };

type Compiled = { readonly kind: 'pattern'; readonly tokens: readonly Token[] } | Unusable;

/** Variables this evaluator resolves, by lower-case name (IAM key names are case-insensitive). */
const VARIABLES: Readonly<Record<string, (context: IotRequestContext) => string | undefined>> = {
  'iot:connection.thing.thingname': (context) => context.thingName,
  'iot:clientid': (context) => context.clientId,
  'iot:certificateid': (context) => context.certificateId,
  'iot:connection.thing.isattached': (context) => String(context.thingAttached),
};

/** `${*}`, `${?}` and `${$}`: the characters themselves, not wildcards or a variable. */
const LITERAL_VARIABLES = new Set(['*', '?', '$']);

/** Resolves the variables in `text`, then reads `*` and `?` of the policy text as wildcards. */
function compilePattern(text: string, context: IotRequestContext): Compiled {
  const tokens: Token[] = [];
  let index = 0;
  while (index < text.length) {
    if (text.startsWith('${', index)) {
      const end = text.indexOf('}', index);
      if (end < 0) return { kind: 'unsupported', detail: `unterminated policy variable in ${text}` };
      const name = text.slice(index + 2, end);
      const value = resolveVariable(name, context);
      if (value.kind !== 'value') return value;
      tokens.push(...literals(value.value));
      index = end + 1;
    } else {
      const char = String.fromCodePoint(text.codePointAt(index) ?? 0);
      tokens.push(char === '*' ? { kind: 'star' } : char === '?' ? { kind: 'one' } : { kind: 'literal', char });
      index += char.length;
    }
  }
  return { kind: 'pattern', tokens };
}

type Resolved = { readonly kind: 'value'; readonly value: string } | Unusable;

function resolveVariable(name: string, context: IotRequestContext): Resolved {
  if (LITERAL_VARIABLES.has(name)) return { kind: 'value', value: name };
  const resolver = VARIABLES[name.toLowerCase()];
  if (resolver === undefined) return { kind: 'unsupported', detail: `unsupported policy variable \${${name}}` };
  const value = resolver(context);
  // An empty value is treated as no value, so `client/${iot:Connection.Thing.ThingName}` can never match `client/`.
  if (value === undefined || value === '') return { kind: 'unresolved', variable: name };
  return { kind: 'value', value };
}

function literals(text: string): Token[] {
  return Array.from(text, (char) => ({ kind: 'literal', char }) as const);
}

/** A pattern whose `*` and `?` are wildcards and that has no variables (actions). */
function literalPattern(text: string): Token[] {
  return Array.from(text, (char): Token => (char === '*' ? { kind: 'star' } : char === '?' ? { kind: 'one' } : { kind: 'literal', char }));
}

/**
 * Wildcard matching without regular expressions: the classic backtrack-to-last-star walk,
 * O(pattern × text) at worst, so a long topic cannot make a policy check slow.
 */
function globMatches(pattern: readonly Token[], text: string): boolean {
  const chars = Array.from(text);
  let p = 0;
  let t = 0;
  let starAt = -1;
  let starText = 0;
  while (t < chars.length) {
    const token = pattern[p];
    if (token !== undefined && (token.kind === 'one' || (token.kind === 'literal' && token.char === chars[t]))) {
      p += 1;
      t += 1;
    } else if (token?.kind === 'star') {
      starAt = p;
      starText = t;
      p += 1;
    } else if (starAt >= 0) {
      p = starAt + 1;
      starText += 1;
      t = starText;
    } else {
      return false;
    }
  }
  while (pattern[p]?.kind === 'star') p += 1;
  return p === pattern.length;
}

// ---------------------------------------------------------------------------------------------
// Conditions

/** Condition keys this evaluator knows, by lower-case name; `undefined` = absent from the request. */
const CONDITION_KEYS: Readonly<Record<string, (context: IotRequestContext) => string | undefined>> = {
  'iot:connection.thing.isattached': (context) => String(context.thingAttached),
  // AWS IoT Core sets a multi-value attribute's variable to its first value; a certificate without an OU has none.
  'iot:certificate.subject.organizationalunit': (context) => context.subjectOrganizationalUnits?.[0],
  'iot:connection.thing.thingname': (context) => (context.thingName === '' ? undefined : context.thingName),
  'iot:clientid': (context) => context.clientId,
};

interface Operator {
  /** Negated operators hold when no value matches, and when the key is absent. */
  readonly negated: boolean;
  readonly matches: (actual: string, expected: string, context: IotRequestContext) => boolean | Unusable;
}

const OPERATORS: Readonly<Record<string, Operator>> = {
  StringEquals: { negated: false, matches: (actual, expected, context) => stringEquals(actual, expected, context) },
  StringNotEquals: { negated: true, matches: (actual, expected, context) => stringEquals(actual, expected, context) },
  StringLike: {
    negated: false,
    matches: (actual, expected, context) => {
      const compiled = compilePattern(expected, context);
      return compiled.kind === 'pattern' ? globMatches(compiled.tokens, actual) : compiled;
    },
  },
  Bool: {
    negated: false,
    matches: (actual, expected, context) => {
      const resolved = resolveAll(expected, context);
      if (typeof resolved !== 'string') return resolved;
      const wanted = resolved.toLowerCase();
      return (wanted === 'true' || wanted === 'false') && actual.toLowerCase() === wanted;
    },
  },
};

function stringEquals(actual: string, expected: string, context: IotRequestContext): boolean | Unusable {
  const resolved = resolveAll(expected, context);
  return typeof resolved === 'string' ? actual === resolved : resolved;
}

/** `text` with its variables replaced, wildcards left as plain characters (for exact comparisons). */
function resolveAll(text: string, context: IotRequestContext): string | Unusable {
  const compiled = compilePattern(text, context);
  if (compiled.kind !== 'pattern') return compiled;
  return compiled.tokens.map((token) => (token.kind === 'literal' ? token.char : token.kind === 'star' ? '*' : '?')).join('');
}

function evaluateCondition(condition: NonNullable<IotPolicyStatement['Condition']>, context: IotRequestContext): StatementOutcome {
  const held: string[] = [];
  for (const [operatorName, entries] of Object.entries(condition)) {
    const operator = OPERATORS[operatorName];
    if (operator === undefined) return { kind: 'unsupported', detail: `unsupported condition operator ${operatorName}` };
    for (const [key, expectedValues] of Object.entries(entries)) {
      const keyValue = CONDITION_KEYS[key.toLowerCase()];
      if (keyValue === undefined) return { kind: 'unsupported', detail: `unsupported condition key ${key} (in ${operatorName})` };
      const expected = asList(expectedValues);
      const described = `${operatorName} ${key} ${JSON.stringify(expectedValues)}`;
      const actual = keyValue(context);
      if (actual === undefined) {
        if (operator.negated) {
          held.push(described);
          continue;
        }
        return { kind: 'no-match', detail: `Condition ${described} not met (${key} is absent)` };
      }
      let anyMatch = false;
      for (const value of expected) {
        const result = operator.matches(actual, value, context);
        if (result === true) anyMatch = true;
        else if (typeof result !== 'boolean') {
          if (result.kind === 'unsupported') return { kind: 'unsupported', detail: `Condition ${described}: ${result.detail}` };
          return { kind: 'no-match', detail: `Condition ${described}: ${unresolvedDetail(result.variable)}` };
        }
      }
      if (anyMatch === operator.negated) return { kind: 'no-match', detail: `Condition ${described} not met (${key} is ${JSON.stringify(actual)})` };
      held.push(described);
    }
  }
  return { kind: 'match', detail: held.length > 0 ? ` with Condition ${held.join(', ')}` : '' };
}
