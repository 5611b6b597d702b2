/**
 * A design floor for a flow: the DynamoDB calls the flow makes, recorded from one real run (a calibration) and
 * replayed bare — the same operations, in the same order, with the same items, condition expressions and item
 * sizes — under fresh keys, with none of the flow's code around them. What the flow costs beyond its replay is our
 * code's overhead; what the replay costs is what the design's calls cost on this DynamoDB.
 *
 * Recorded, not written down: the store's calls change with the code, and the floor follows them.
 *
 * - `DynamoDbCallRecorder` sits in an SDK client's middleware stack (`build` step: once per call, before the SDK's
 *   retries; a `DynamoDBDocumentClient` shares its client's stack and has marshalled its input by then) and keeps each
 *   call's operation, its low-level input, whether it succeeded (or the name of its error), and whether it began
 *   while the one before it was still in flight (the flow ran them together; the replay does too).
 * - `freshKeys` rewrites a recording for one more replay: every per-flow token (the identifiers given, and every UUID
 *   or run of 32+ hex digits found in the values, except in table and index names) becomes a random token of the same
 *   length and character classes, the same one wherever it appears. Items keep their sizes; conditions that held in
 *   the calibration hold again, since the replay rebuilds the same state under other keys.
 * - `replayCalls` sends them on a low-level `DynamoDBClient` and checks each answered as in the calibration (a call
 *   that failed there, e.g. a condition meant to fail, must fail the same way): a floor that did less work than the
 *   flow would not be a floor.
 */
import { randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import {
  BatchGetItemCommand,
  BatchWriteItemCommand,
  DeleteItemCommand,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  ScanCommand,
  TransactGetItemsCommand,
  TransactWriteItemsCommand,
  UpdateItemCommand,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';

/** The operations a replay can send, by their AWS name. */
const COMMANDS = {
  BatchGetItem: BatchGetItemCommand,
  BatchWriteItem: BatchWriteItemCommand,
  DeleteItem: DeleteItemCommand,
  GetItem: GetItemCommand,
  PutItem: PutItemCommand,
  Query: QueryCommand,
  Scan: ScanCommand,
  TransactGetItems: TransactGetItemsCommand,
  TransactWriteItems: TransactWriteItemsCommand,
  UpdateItem: UpdateItemCommand,
} as const;
export type ReplayableOperation = keyof typeof COMMANDS;

export interface RecordedCall {
  readonly operation: ReplayableOperation;
  /** The low-level input as sent (attribute values marshalled). */
  readonly input: Readonly<Record<string, unknown>>;
  /** `OK`, or the name of the error the call ended with. */
  readonly outcome: string;
  /** It began before the call before it had answered: the flow had both in flight, the replay sends them together. */
  readonly overlapsPrevious: boolean;
}

export class ReplayError extends Error {
  public override readonly name = 'ReplayError';
  public constructor(
    public readonly code: 'UNREPLAYABLE_OPERATION' | 'OUTCOME_DIFFERS' | 'NOTHING_RECORDED',
    message: string,
  ) {
    super(message);
  }
}

type MiddlewareClient = Pick<DynamoDBClient, 'middlewareStack'>;

const isReplayable = (operation: string): operation is ReplayableOperation => operation in COMMANDS;

interface RecordingEntry {
  readonly startedAt: number;
  endedAt?: number;
  call: Omit<RecordedCall, 'overlapsPrevious'>;
}

let recorders = 0;

export class DynamoDbCallRecorder {
  private recording: RecordingEntry[] | undefined;
  private readonly name = `dynamoDbCallRecorder${(recorders += 1)}`;

  /** Records the calls `client` sends while `record` runs (a document client and the client it wraps share one stack). */
  public constructor(private readonly client: MiddlewareClient) {
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const recording = this.recording;
        if (recording === undefined) return next(args);
        const operation = (context.commandName ?? 'Unknown').replace(/Command$/, '');
        if (!isReplayable(operation)) throw new ReplayError('UNREPLAYABLE_OPERATION', `the flow called ${operation}, which the replay cannot send: add it to COMMANDS in bench/support/dynamodb-call-replay.ts`);
        const entry: RecordingEntry = { startedAt: performance.now(), call: { operation, input: structuredClone(args.input as Record<string, unknown>), outcome: 'OK' } };
        recording.push(entry);
        try {
          return await next(args);
        } catch (error) {
          entry.call = { ...entry.call, outcome: (error as Error).name };
          throw error;
        } finally {
          entry.endedAt = performance.now();
        }
      },
      { step: 'build', name: this.name, priority: 'low' },
    );
  }

  /** Leaves the client's middleware stack. */
  public detach(): void {
    this.client.middlewareStack.remove(this.name);
  }

  /** The calls `flow` makes, in the order they began. One recording at a time. */
  public async record<T>(flow: () => Promise<T>): Promise<{ readonly result: T; readonly calls: RecordedCall[] }> {
    if (this.recording !== undefined) throw new Error('a recording is already running on this client');
    const recording: RecordingEntry[] = [];
    this.recording = recording;
    try {
      const result = await flow();
      const calls = recording.map((entry, index) => {
        const previous = recording[index - 1];
        return { ...entry.call, overlapsPrevious: previous !== undefined && (previous.endedAt === undefined || previous.endedAt > entry.startedAt) };
      });
      return { result, calls };
    } finally {
      this.recording = undefined;
    }
  }
}

const TOKEN_PATTERNS = [/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi, /[0-9a-f]{32,}/gi];
/** Fields whose values name a table or an index, never a key: a replay writes to the same table. */
const NAME_FIELDS = new Set(['TableName', 'IndexName']);

function* stringsOf(value: unknown, field?: string): Generator<{ text: string; isName: boolean }> {
  if (typeof value === 'string') yield { text: value, isName: field !== undefined && NAME_FIELDS.has(field) };
  else if (Array.isArray(value)) for (const item of value) yield* stringsOf(item, field);
  else if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)) {
    for (const [key, inner] of Object.entries(value)) {
      yield* stringsOf(inner, key);
      if (field === 'RequestItems') yield { text: key, isName: true }; // BatchGetItem/BatchWriteItem: keyed by table name
    }
  }
}

/**
 * The per-flow tokens of a recording: `identifiers`, and every UUID or long hex run outside table and index names,
 * except those in `keep` (values every flow shares, such as the CA's certificate id: a replay reads the same items).
 */
export function tokensOf(calls: readonly RecordedCall[], identifiers: readonly string[] = [], keep: readonly string[] = []): string[] {
  const names: string[] = [];
  const found = new Set(identifiers.filter((identifier) => identifier.length > 0));
  for (const call of calls) {
    for (const { text, isName } of stringsOf(call.input)) {
      if (isName) names.push(text);
      else for (const pattern of TOKEN_PATTERNS) for (const match of text.matchAll(pattern)) found.add(match[0]);
    }
  }
  // Longest first, so a token inside another (a device id inside a longer key) is replaced within it consistently.
  return [...found].filter((token) => !keep.includes(token) && !names.some((name) => name.includes(token))).sort((a, b) => b.length - a.length);
}

const LOWER = 'abcdefghijklmnopqrstuvwxyz';
const pick = (alphabet: string) => alphabet[randomInt(alphabet.length)] as string;

/** A random token shaped like `token`: same length; hex digits, letters and digits stay in their class, the rest is kept. */
export function freshToken(token: string): string {
  const hexOnly = /^[0-9a-f-]+$/i.test(token);
  return token.replace(/[0-9a-z]/gi, (char) => {
    const upper = char !== char.toLowerCase();
    const replaced = hexOnly ? pick('0123456789abcdef') : /\d/.test(char) ? pick('0123456789') : pick(LOWER);
    return upper ? replaced.toUpperCase() : replaced;
  });
}

function rewrite(value: unknown, replace: (text: string) => string, field?: string): unknown {
  if (typeof value === 'string') return field !== undefined && NAME_FIELDS.has(field) ? value : replace(value);
  if (Array.isArray(value)) return value.map((item) => rewrite(item, replace, field));
  if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)) return Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, rewrite(inner, replace, key)]));
  return value;
}

/** The recording again under fresh keys: each token replaced by one fresh token, the same one everywhere. */
export function freshKeys(calls: readonly RecordedCall[], tokens: readonly string[]): RecordedCall[] {
  if (tokens.length === 0) return [...calls];
  const replacements = new Map(tokens.map((token) => [token, freshToken(token)]));
  const pattern = new RegExp(tokens.map((token) => token.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g');
  const replace = (text: string) => text.replace(pattern, (token) => replacements.get(token) ?? token);
  return calls.map((call) => ({ ...call, input: rewrite(call.input, replace) as Record<string, unknown> }));
}

/** Sends the calls in order (those that overlapped their predecessor together with it); each must end as recorded. */
export async function replayCalls(client: DynamoDBClient, calls: readonly RecordedCall[]): Promise<void> {
  if (calls.length === 0) throw new ReplayError('NOTHING_RECORDED', 'no call to replay: the calibration recorded none');
  const stages: RecordedCall[][] = [];
  for (const call of calls) {
    const last = stages.at(-1);
    if (call.overlapsPrevious && last !== undefined) last.push(call);
    else stages.push([call]);
  }
  for (const stage of stages) {
    await Promise.all(
      stage.map(async (call) => {
        const Command = COMMANDS[call.operation] as new (input: unknown) => Parameters<DynamoDBClient['send']>[0];
        let outcome = 'OK';
        try {
          await client.send(new Command(call.input));
        } catch (error) {
          outcome = (error as Error).name;
        }
        if (outcome !== call.outcome) throw new ReplayError('OUTCOME_DIFFERS', `replayed ${call.operation} ended ${outcome}, the calibration's ended ${call.outcome}: the floor would not do the flow's work`);
      }),
    );
  }
}

/** How many items a call reads or writes (a transaction's or a batch's parts; 1 for the others). */
export function itemCountOf(call: RecordedCall): number {
  const input = call.input as { TransactItems?: unknown[]; RequestItems?: Record<string, { Keys?: unknown[] } | unknown[]> };
  if (input.TransactItems) return input.TransactItems.length;
  if (input.RequestItems) return Object.values(input.RequestItems).reduce<number>((sum, request) => sum + (Array.isArray(request) ? request.length : (request.Keys?.length ?? 0)), 0);
  return 1;
}

/** `BatchGetItem ×2 → TransactWriteItems ×3 (fails: TransactionCanceledException) ∥ ...`: what a floor replays, in one line. */
export function describeCalls(calls: readonly RecordedCall[]): string {
  return calls
    .map((call, index) => `${index === 0 ? '' : call.overlapsPrevious ? ' ∥ ' : ' → '}${call.operation} ×${itemCountOf(call)}${call.outcome === 'OK' ? '' : ` (fails: ${call.outcome})`}`)
    .join('');
}
