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

  // Every API flow starts with one conditional PutItem of its operation record (no read first: a retry gets the stored
  // record back from the refused write), and a change of that record alone (progress) is a PutItem, not a transaction.
  test.each<[CountedFlow, FlowCalls['calls']]>([
    // The operation, the device created on condition that it does not exist (no read first), the awaiting certificates, the record DONE.
    ['pre-registration', { DynamoDB: { PutItem: 2, Query: 1, TransactWriteItems: 1 } }],
    [
      'issuance (CSR)',
      {
        // The operation, the device read once, the issuance id (saved before collecting), the certificate with the record DONE.
        DynamoDB: { GetItem: 1, PutItem: 2, TransactWriteItems: 1 },
        // No DescribeCertificate: a certificate registered just now is ACTIVE (only a retry reads its status back).
        IoT: { AddThingToThingGroup: 1, AttachThingPrincipal: 1, CreateThing: 1, RegisterCertificate: 1 },
        'Private CA': { GetCertificate: 2, IssueCertificate: 1 },
      },
    ],
    // The operation, device and certificate in one read, the revocation with the record DONE, the device again (a rotation to end?).
    ['certificate revocation', { DynamoDB: { BatchGetItem: 1, GetItem: 1, PutItem: 1, TransactWriteItems: 1 }, IoT: { DetachThingPrincipal: 1, UpdateCertificate: 1 }, 'Private CA': { RevokeCertificate: 1 } }],
    // The operation, the device read, its new status; its certificates (links, records), each one's new status, the record DONE on
    // condition that the device did not change meanwhile (the check that ends the alignment, in the same write).
    ['suspension', { DynamoDB: { BatchGetItem: 1, GetItem: 1, PutItem: 1, Query: 1, TransactWriteItems: 3 }, IoT: { UpdateCertificate: 1 } }],
    ['resumption', { DynamoDB: { BatchGetItem: 1, GetItem: 1, PutItem: 1, Query: 1, TransactWriteItems: 3 }, IoT: { UpdateCertificate: 1 } }],
    ['device revocation', { DynamoDB: { BatchGetItem: 1, GetItem: 1, PutItem: 1, Query: 1, TransactWriteItems: 3 }, IoT: { DetachThingPrincipal: 1, UpdateCertificate: 1 }, 'Private CA': { RevokeCertificate: 1 } }],
  ])('%s makes exactly these calls', (flow, expected) => {
    expect(callsOf(flow)).toEqual(expected);
  });

  test('no flow calls AttachPolicy (the fleet policy is on the thing group)', () => {
    for (const { calls } of results) expect(calls.IoT?.AttachPolicy).toBeUndefined();
  });
});
