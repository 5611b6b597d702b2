import { randomUUID } from 'node:crypto';
import type { MiddlewareStack } from '@smithy/types';
import { DynamoDbDeviceStore } from '../../functions/adapters/aws/dynamodb-device-store';
import { isLifecycleError } from '../../functions/core/errors';
import type { LifecycleSettings } from '../../functions/core/lifecycle';
import { localDocumentClient } from '../../local/dynamodb-local';
import { createTestTable, dynamoDbEndpoint, type TestTable } from '../support/dynamodb';
import { deviceViolations } from '../support/invariants';
import { createLifecycleFixture, type LifecycleFixture } from '../support/lifecycle-fixture';
import { makeCsr } from '../support/pki';

/*
 * A one-record change is now a conditional PutItem, not a one-item TransactWriteItems. The SDK gives a transaction an
 * idempotency token (ClientRequestToken), so a transaction that landed but whose answer was lost is answered success
 * when the SDK sends it again; a PutItem sent again is refused by its own condition (ConditionalCheckFailed). Every
 * flow is run here on DynamoDB Local with the answer of its k-th PutItem lost (the SDK retries it, as on a real
 * network), for each k; the request is then sent again with the same key until it answers for good. Whatever k, the
 * outcome must be the one of a run without loss, and the device consistent across store, registry and CA.
 */

const ACTOR = 'arn:aws:iam::123456789012:role/backend';
const RETRYABLE = new Set(['UPSTREAM_THROTTLED', 'UPSTREAM_FAILURE', 'CONFLICT', 'REQUEST_IN_PROGRESS']);
const MAX_ATTEMPTS = 6;

/** Loses the answer of the k-th PutItem on the wire (counted from `arm`), once. */
class AnswerLoss {
  public putItems = 0;
  public lost = 0;
  private lossAt = Number.POSITIVE_INFINITY;

  public arm(k: number): void {
    this.putItems = 0;
    this.lost = 0;
    this.lossAt = k;
  }

  public attach(stack: MiddlewareStack<object, object>): void {
    stack.add(
      (next, context) => async (args) => {
        const result = await next(args);
        if ((context as { commandName?: string }).commandName === 'PutItemCommand') {
          this.putItems += 1;
          if (this.putItems === this.lossAt) {
            this.lost += 1;
            throw Object.assign(new Error('socket hang up after the request was sent'), { name: 'TimeoutError', code: 'ECONNRESET', $metadata: {} });
          }
        }
        return result;
      },
      // After the SDK's retry middleware: what it retries is the request whose answer was lost.
      { step: 'finalizeRequest', name: 'loseAnAnswer', priority: 'low' },
    );
  }
}

interface Case {
  readonly fixture: LifecycleFixture<DynamoDbDeviceStore>;
  readonly deviceId: string;
}

interface Flow {
  readonly name: string;
  readonly policy: LifecycleSettings['enrollmentPolicy'];
  /** Brings the device to where the flow starts (no loss). */
  readonly setup: (c: Case) => Promise<Record<string, string>>;
  /** The request under test; the same call each time (same keys), so a repeat is the client's retry. */
  readonly act: (c: Case, state: Record<string, string>) => Promise<string>;
}

async function issued(c: Case): Promise<Record<string, string>> {
  await c.fixture.lifecycle.preRegisterDevice({ deviceId: c.deviceId, attributes: {}, actor: ACTOR, requestKey: `pre-${c.deviceId}` });
  const { certificateId } = await c.fixture.lifecycle.issueFromCsr({ deviceId: c.deviceId, csrPem: (await makeCsr(c.deviceId)).csrPem, actor: ACTOR, requestKey: `issue-${c.deviceId}` });
  return { certificateId };
}

const FLOWS: readonly Flow[] = [
  {
    name: 'pre-registration',
    policy: 'open',
    setup: async () => ({}),
    act: async (c) => (await c.fixture.lifecycle.preRegisterDevice({ deviceId: c.deviceId, attributes: { line: '4' }, actor: ACTOR, requestKey: `pre-${c.deviceId}` })).status,
  },
  {
    name: 'issuance',
    policy: 'open',
    setup: async (c) => {
      await c.fixture.lifecycle.preRegisterDevice({ deviceId: c.deviceId, attributes: {}, actor: ACTOR, requestKey: `pre-${c.deviceId}` });
      return { csrPem: (await makeCsr(c.deviceId)).csrPem };
    },
    act: async (c, state) => {
      await c.fixture.lifecycle.issueFromCsr({ deviceId: c.deviceId, csrPem: state.csrPem as string, actor: ACTOR, requestKey: `issue-${c.deviceId}` });
      return 'ISSUED';
    },
  },
  {
    // The first delivery recorded the certificate, then failed in AWS IoT: the redelivery claims the existing record (one PutItem).
    name: 'first connect (JITR), delivered again after a failed activation',
    policy: 'open',
    setup: async (c) => {
      const event = await c.fixture.firstConnect(await c.fixture.mintCertificate(c.deviceId));
      const attach = jest.spyOn(c.fixture.registry, 'attachCertificate').mockRejectedValueOnce(Object.assign(new Error('AttachThingPrincipal failed'), { code: 'UPSTREAM_FAILURE' }));
      await expect(c.fixture.lifecycle.registerOnFirstConnect(event, { deliveryId: `delivery-${c.deviceId}` })).rejects.toThrow('AttachThingPrincipal failed');
      attach.mockRestore();
      return { event: JSON.stringify(event) };
    },
    act: async (c, state) => {
      const outcome = await c.fixture.lifecycle.registerOnFirstConnect(JSON.parse(state.event as string), { deliveryId: `delivery-${c.deviceId}` });
      // The JITR handler fails the delivery on IN_PROGRESS, so SQS delivers it again (same message id).
      if (outcome.outcome === 'IN_PROGRESS') throw Object.assign(new Error('in progress'), { code: 'REQUEST_IN_PROGRESS' });
      return outcome.outcome;
    },
  },
  {
    name: 'pre-registration activating a certificate that connected first',
    policy: 'preregistered',
    setup: async (c) => {
      const outcome = await c.fixture.lifecycle.registerOnFirstConnect(await c.fixture.firstConnect(await c.fixture.mintCertificate(c.deviceId)), { deliveryId: `delivery-${c.deviceId}` });
      expect(outcome.outcome).toBe('AWAITING_PRE_REGISTRATION');
      return {};
    },
    act: async (c) => (await c.fixture.lifecycle.preRegisterDevice({ deviceId: c.deviceId, attributes: {}, actor: ACTOR, requestKey: `pre-${c.deviceId}` })).status,
  },
  {
    name: 'suspension',
    policy: 'open',
    setup: issued,
    act: async (c) => (await c.fixture.lifecycle.suspendDevice({ deviceId: c.deviceId, actor: ACTOR, requestKey: `suspend-${c.deviceId}` })).status,
  },
  {
    name: 'resumption',
    policy: 'open',
    setup: async (c) => {
      const state = await issued(c);
      await c.fixture.lifecycle.suspendDevice({ deviceId: c.deviceId, actor: ACTOR, requestKey: `suspend-${c.deviceId}` });
      return state;
    },
    act: async (c) => (await c.fixture.lifecycle.resumeDevice({ deviceId: c.deviceId, actor: ACTOR, requestKey: `resume-${c.deviceId}` })).status,
  },
  {
    name: 'certificate revocation',
    policy: 'open',
    setup: issued,
    act: async (c, state) =>
      (await c.fixture.lifecycle.revokeCertificate({ deviceId: c.deviceId, certificateId: state.certificateId as string, reason: 'KEY_COMPROMISE', actor: ACTOR, requestKey: `revoke-${c.deviceId}` })).status,
  },
  {
    name: 'rotation request and commit',
    policy: 'open',
    setup: async (c) => ({ ...(await issued(c)), csrPem: (await makeCsr(c.deviceId)).csrPem }),
    act: async (c, state) => {
      const sender = { thingName: c.deviceId, clientId: c.deviceId, principal: state.certificateId as string };
      const rotated = await c.fixture.lifecycle.requestRotation({ ...sender, requestId: `rotate-${c.deviceId}`, csrPem: state.csrPem as string });
      await c.fixture.lifecycle.commitRotation({ ...sender, principal: rotated.certificateId, requestId: `rotate-${c.deviceId}`, certificateId: rotated.certificateId });
      return 'COMMITTED';
    },
  },
];

describe('a PutItem whose answer was lost, in every flow, at every PutItem', () => {
  let table: TestTable;
  const loss = new AnswerLoss();
  const fixtures = new Map<LifecycleSettings['enrollmentPolicy'], LifecycleFixture<DynamoDbDeviceStore>>();
  beforeAll(async () => {
    table = await createTestTable();
    const documentClient = localDocumentClient(dynamoDbEndpoint());
    loss.attach(documentClient.middlewareStack as unknown as MiddlewareStack<object, object>);
    const store = new DynamoDbDeviceStore({ tableName: table.tableName, documentClient });
    for (const policy of ['open', 'preregistered'] as const) fixtures.set(policy, await createLifecycleFixture({ enrollmentPolicy: policy }, store));
  });
  afterAll(async () => {
    await table.drop();
  });

  /** The request, sent again with the same key while it answers retryably; the lease of a lost execution is waited out on the clock. */
  async function untilFinal(c: Case, flow: Flow, state: Record<string, string>): Promise<string> {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await flow.act(c, state);
      } catch (error) {
        const code = isLifecycleError(error) ? error.code : (error as { code?: string }).code;
        if (!RETRYABLE.has(code ?? '') || attempt >= MAX_ATTEMPTS) return `error ${code ?? String(error)}`;
        c.fixture.clock.advance(61_000);
      }
    }
  }

  test.each(FLOWS.map((flow) => [flow.name, flow] as const))('%s: the same outcome and a consistent device whichever PutItem answer is lost', async (_name, flow) => {
    const fixture = fixtures.get(flow.policy) as LifecycleFixture<DynamoDbDeviceStore>;
    const newCase = (): Case => ({ fixture, deviceId: `lost-${randomUUID().slice(0, 8)}` });

    const clean = newCase();
    const cleanState = await flow.setup(clean);
    loss.arm(Number.POSITIVE_INFINITY);
    const expected = await untilFinal(clean, flow, cleanState);
    const putItems = loss.putItems;
    expect(putItems).toBeGreaterThan(0); // each flow makes one-record writes
    // The baseline: what the invariant checker says of a run without loss. (It reads rotation events, which carry no
    // status, as breaking a certificate's chain of transitions: the rotation flow's baseline holds that one line.)
    const anonymous = (violation: string, deviceId: string) => violation.replaceAll(deviceId, '<device>').replace(/\b[0-9a-f]{12}\b/g, '<certificate>');
    const baseline = new Set((await deviceViolations(fixture, clean.deviceId)).map((violation) => anonymous(violation, clean.deviceId)));
    expect([...baseline].filter((violation) => !/ROTATION_STARTED\(∅→∅\), CERTIFICATE_ISSUED\(∅→ACTIVE\), ROTATION_COMMITTED\(∅→∅\)$/.test(violation))).toEqual([]);

    const problems: string[] = [];
    for (let k = 1; k <= putItems; k += 1) {
      const c = newCase();
      const state = await flow.setup(c);
      loss.arm(k);
      const outcome = await untilFinal(c, flow, state);
      if (loss.lost !== 1) problems.push(`PutItem #${k} of ${putItems}: ${loss.lost} answers lost, expected 1`);
      loss.arm(Number.POSITIVE_INFINITY);
      if (outcome !== expected) problems.push(`PutItem #${k} of ${putItems} lost: answered ${outcome}, without loss ${expected}`);
      for (const violation of await deviceViolations(fixture, c.deviceId)) {
        if (!baseline.has(anonymous(violation, c.deviceId))) problems.push(`PutItem #${k} of ${putItems} lost: ${violation}`);
      }
    }
    expect(problems).toEqual([]);
  });
});
