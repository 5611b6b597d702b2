import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';

/**
 * Counts the AWS calls a flow makes, per service and operation, where they leave the SDK:
 * - a client that really sends (DynamoDB, on DynamoDB Local) gets a middleware in its `finalizeRequest` step, after
 *   the SDK's retry middleware, so every request put on the wire is counted once (an SDK retry counts again);
 * - a client answered by aws-sdk-client-mock (AWS IoT, AWS Private CA: the mock replaces `send`, so no middleware
 *   runs) is counted from the mock's own record of the commands it received.
 * `measure` answers what one flow added to both.
 */

/** Per service, per operation (`GetItem`, `DescribeCertificate`, ...): how many calls. */
export type AwsCallCounts = Record<string, Record<string, number>>;

/** The part of an SDK v3 client the counter needs: its middleware stack (typed as DynamoDB's: the one client that sends here). */
type MiddlewareClient = Pick<DynamoDBClient, 'middlewareStack'>;

/** The part of an aws-sdk-client-mock stub the counter needs: the calls it received (sinon calls, `args[0]` the command). */
interface MockedClient {
  calls(): readonly unknown[];
}

const COUNTER_MIDDLEWARE = 'awsCallCounter';

/** `GetItemCommand` → `GetItem`: the operation's name as AWS (and its quotas and bills) name it. */
const operationOf = (commandName: string): string => commandName.replace(/Command$/, '');

export class AwsCallCounter {
  private readonly sent: { service: string; operation: string }[] = [];
  private readonly mocks: { service: string; mock: MockedClient }[] = [];

  /** Counts each request `client` puts on the wire. A `DynamoDBDocumentClient` shares its client's stack: attach either, once. */
  public attachMiddleware(service: string, client: MiddlewareClient): this {
    client.middlewareStack.add(
      (next, context) => async (args) => {
        this.sent.push({ service, operation: operationOf(context.commandName ?? 'Unknown') });
        return next(args);
      },
      { step: 'finalizeRequest', name: COUNTER_MIDDLEWARE, priority: 'low' },
    );
    return this;
  }

  /** Counts each command an aws-sdk-client-mock stub receives. */
  public attachMock(service: string, mock: MockedClient): this {
    this.mocks.push({ service, mock });
    return this;
  }

  /** Every call counted so far. */
  public counts(): AwsCallCounts {
    const calls = [...this.sent, ...this.mocks.flatMap(({ service, mock }) => mock.calls().map((call) => ({ service, operation: operationOf(commandNameOf((call as { args: readonly unknown[] }).args[0])) })))];
    const counts: AwsCallCounts = {};
    for (const { service, operation } of calls) {
      const perService = (counts[service] ??= {});
      perService[operation] = (perService[operation] ?? 0) + 1;
    }
    return counts;
  }

  /** What `flow` adds to the counts (sorted by service and operation), with its result. */
  public async measure<T>(flow: () => Promise<T>): Promise<{ readonly result: T; readonly calls: AwsCallCounts }> {
    const before = this.counts();
    const result = await flow();
    return { result, calls: difference(this.counts(), before) };
  }
}

function commandNameOf(command: unknown): string {
  return (command as { constructor?: { name?: string } } | undefined)?.constructor?.name ?? 'Unknown';
}

function difference(after: AwsCallCounts, before: AwsCallCounts): AwsCallCounts {
  const result: AwsCallCounts = {};
  for (const service of Object.keys(after).sort()) {
    for (const operation of Object.keys(after[service] ?? {}).sort()) {
      const added = (after[service]?.[operation] ?? 0) - (before[service]?.[operation] ?? 0);
      if (added > 0) (result[service] ??= {})[operation] = added;
    }
  }
  return result;
}

/** The number of calls to one service (all operations). */
export const totalOf = (calls: AwsCallCounts, service: string): number => Object.values(calls[service] ?? {}).reduce((sum, count) => sum + count, 0);
