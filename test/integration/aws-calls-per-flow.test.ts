import { totalOf } from '../support/aws-call-counter';
import { countAwsCallsPerFlow, type CountedFlow, type FlowCalls } from '../support/aws-call-flows';

/**
 * The AWS calls each flow makes, counted on the wire (DynamoDB Local through an SDK middleware; AWS IoT and AWS Private CA
 * at aws-sdk-client-mock), warm, through the real handlers. They are deterministic: a change here is a change of what each
 * onboarding or API call costs in requests, quotas and money, and must be deliberate. `npx tsx bench/aws-calls.ts` prints them.
 * The fake Private CA answers the first GetCertificate of each certificate RequestInProgressException, as Private CA does: hence 2.
 */
describe('AWS calls per flow (deterministic; issue 12 budgets them)', () => {
  let results: FlowCalls[];
  beforeAll(async () => {
    results = await countAwsCallsPerFlow();
  });
  const callsOf = (flow: CountedFlow) => results.find((result) => result.flow === flow)?.calls ?? {};

  test('a JITR onboarding reads DynamoDB once (device and certificate together) and writes twice; 5 AWS IoT calls, no AttachPolicy', () => {
    const calls = callsOf('JITR onboarding');

    expect(calls).toEqual({
      DynamoDB: { BatchGetItem: 1, TransactWriteItems: 2 },
      IoT: { AddThingToThingGroup: 1, AttachThingPrincipal: 1, CreateThing: 1, DescribeCertificate: 1, UpdateCertificate: 1 },
    });
    expect(totalOf(calls, 'DynamoDB')).toBeLessThanOrEqual(3);
  });

  test.each<[CountedFlow, FlowCalls['calls']]>([
    ['pre-registration', { DynamoDB: { GetItem: 3, Query: 1, TransactWriteItems: 3 } }],
    [
      'issuance (CSR)',
      {
        // The operation record (read, then written), the device read once, the issuance id, the certificate, the record.
        DynamoDB: { GetItem: 2, TransactWriteItems: 4 },
        // No DescribeCertificate: a certificate registered just now is ACTIVE (only a retry reads its status back).
        IoT: { AddThingToThingGroup: 1, AttachThingPrincipal: 1, CreateThing: 1, RegisterCertificate: 1 },
        'Private CA': { GetCertificate: 2, IssueCertificate: 1 },
      },
    ],
    ['certificate revocation', { DynamoDB: { GetItem: 4, TransactWriteItems: 2 }, IoT: { DetachThingPrincipal: 1, UpdateCertificate: 1 }, 'Private CA': { RevokeCertificate: 1 } }],
    ['suspension', { DynamoDB: { BatchGetItem: 1, GetItem: 5, Query: 1, TransactWriteItems: 4 }, IoT: { UpdateCertificate: 1 } }],
    ['resumption', { DynamoDB: { BatchGetItem: 1, GetItem: 5, Query: 1, TransactWriteItems: 4 }, IoT: { UpdateCertificate: 1 } }],
    ['device revocation', { DynamoDB: { BatchGetItem: 1, GetItem: 5, Query: 1, TransactWriteItems: 4 }, IoT: { DetachThingPrincipal: 1, UpdateCertificate: 1 }, 'Private CA': { RevokeCertificate: 1 } }],
  ])('%s makes exactly these calls', (flow, expected) => {
    expect(callsOf(flow)).toEqual(expected);
  });

  test('no flow calls AttachPolicy (the fleet policy is on the thing group)', () => {
    for (const { calls } of results) expect(calls.IoT?.AttachPolicy).toBeUndefined();
  });
});
