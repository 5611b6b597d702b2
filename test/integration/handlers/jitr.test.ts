import { ScanCommand } from '@aws-sdk/lib-dynamodb';
import { UpdateCertificateCommand } from '@aws-sdk/client-iot';
import { createApiHarness, type ApiHarness } from '../../support/api-harness';
import { makeCsr, makeForeignCa } from '../../support/pki';

describe('JITR handler (real core, DynamoDB Local, AWS IoT and Private CA behind aws-sdk-client-mock)', () => {
  let harness: ApiHarness;
  beforeAll(async () => {
    harness = await createApiHarness({ enrollmentPolicy: 'open' });
  });
  afterAll(async () => {
    await harness.close();
  });

  /** A factory-signed certificate's first connect: AWS IoT registers it PENDING_ACTIVATION and publishes this event. */
  async function firstConnect(certificatePem: string) {
    const registered = await harness.aws.registry.registerPendingActivation(certificatePem, harness.aws.caCertificateId);
    return {
      certificateId: registered.certificateId,
      caCertificateId: harness.aws.caCertificateId,
      timestamp: Date.now(),
      certificateStatus: 'PENDING_ACTIVATION',
      awsAccountId: '123456789012',
      certificateRegistrationTimestamp: String(Date.now()),
    };
  }
  const mint = async (deviceId: string) => harness.aws.ca.mintDeviceCertificate(deviceId, (await makeCsr(deviceId)).csrPem, 365);
  const activations = (certificateId: string) =>
    harness.aws.iot.commandCalls(UpdateCertificateCommand).filter((call) => call.args[0].input.certificateId === certificateId && call.args[0].input.newStatus === 'ACTIVE').length;
  const itemsOf = async (deviceId: string) =>
    ((await harness.table.documentClient.send(new ScanCommand({ TableName: harness.table.tableName }))).Items ?? []).filter((item) => item.deviceId === deviceId);

  test('activates a device on its first connect: certificate ACTIVE in AWS IoT, thing created and linked, device recorded', async () => {
    const event = await firstConnect(await mint('jitr-1'));

    const outcome = await harness.jitr(event);

    expect(outcome).toEqual({ outcome: 'ACTIVATED', deviceId: 'jitr-1', certificateId: event.certificateId });
    expect(harness.aws.registry.findCertificate(event.certificateId)?.status).toBe('ACTIVE');
    expect(harness.aws.registry.findThing('jitr-1')?.principals).toEqual([event.certificateId]);
    const view = await harness.call('GET', '/devices/jitr-1');
    expect(view.body).toMatchObject({ status: 'ACTIVE', certificates: [{ certificateId: event.certificateId, status: 'ACTIVE', source: 'JITR' }] });
  });

  test('the same event twice in a row: one activation, one record, no error', async () => {
    const event = await firstConnect(await mint('jitr-2'));

    const outcomes = [await harness.jitr(event), await harness.jitr(event)];

    expect(outcomes.map((o) => o.outcome)).toEqual(['ACTIVATED', 'ALREADY_PROCESSED']);
    expect(activations(event.certificateId)).toBe(1);
  });

  test('the same event eight times at once: one activation, one thing, one certificate record, one audit entry per change', async () => {
    const event = await firstConnect(await mint('jitr-3'));

    const outcomes = await Promise.all(Array.from({ length: 8 }, () => harness.jitr(event)));

    expect(outcomes.filter((o) => o.outcome === 'ACTIVATED')).toHaveLength(1);
    expect(activations(event.certificateId)).toBe(1);
    const items = await itemsOf('jitr-3');
    expect(items.filter((item) => item.itemType === 'Certificate')).toHaveLength(1);
    expect(items.filter((item) => item.itemType === 'Device')).toHaveLength(1);
    const eventTypes = items.filter((item) => item.itemType === 'AuditEvent').map((item) => item.type).sort();
    expect(eventTypes).toEqual(['CERTIFICATE_ACTIVATED', 'CERTIFICATE_REGISTERED', 'DEVICE_ACTIVATED', 'DEVICE_CREATED']);
  });

  test('rejects an event for a certificate from another CA: REVOKED in AWS IoT, REJECTED on record, no device', async () => {
    const foreign = await makeForeignCa();
    const event = await firstConnect(await foreign.issue('jitr-4'));

    const outcome = await harness.jitr(event);

    expect(outcome).toMatchObject({ outcome: 'REJECTED', code: 'INVALID_CERTIFICATE' });
    expect(harness.aws.registry.findCertificate(event.certificateId)?.status).toBe('REVOKED');
    expect(harness.aws.registry.findThing('jitr-4')).toBeUndefined();
    expect((await harness.call('GET', '/devices/jitr-4')).status).toBe(404);
  });

  test('ignores an event for another CA registered in the account: AWS IoT untouched, store unchanged', async () => {
    const foreign = await makeForeignCa();
    const event = { ...(await firstConnect(await foreign.issue('jitr-5'))), caCertificateId: 'b'.repeat(64) };
    const before = await harness.table.documentClient.send(new ScanCommand({ TableName: harness.table.tableName }));
    const iotCalls = harness.aws.iot.calls().length;

    const outcome = await harness.jitr(event);

    expect(outcome).toMatchObject({ outcome: 'IGNORED' });
    expect(harness.aws.iot.calls().length).toBe(iotCalls);
    expect(harness.aws.registry.findCertificate(event.certificateId)?.status).toBe('PENDING_ACTIVATION');
    expect((await harness.table.documentClient.send(new ScanCommand({ TableName: harness.table.tableName }))).Items).toEqual(before.Items);
  });

  test('takes events from the queue in batches and names for redelivery only the records that failed', async () => {
    const good = await firstConnect(await mint('jitr-6'));
    const sqsRecord = (messageId: string, body: string) => ({ messageId, body, eventSource: 'aws:sqs', receiptHandle: 'r', attributes: {}, messageAttributes: {}, md5OfBody: '', eventSourceARN: 'arn:aws:sqs:eu-west-1:123456789012:jitr', awsRegion: 'eu-west-1' });
    const unknownCertificate = { ...good, certificateId: 'c'.repeat(64) };

    const response = await harness.jitr({ Records: [sqsRecord('m-1', JSON.stringify(good)), sqsRecord('m-2', JSON.stringify(unknownCertificate)), sqsRecord('m-3', 'not json')] } as never);

    expect(response).toEqual({ batchItemFailures: [{ itemIdentifier: 'm-2' }] });
    expect(harness.aws.registry.findCertificate(good.certificateId)?.status).toBe('ACTIVE');
  });

  test("processes an event the rule's error action wrapped, once it is moved back to the queue", async () => {
    const event = await firstConnect(await mint('jitr-7'));
    const wrapped = { ruleName: 'jitr', topic: '$aws/events/certificates/registered/x', failures: [], base64OriginalPayload: Buffer.from(JSON.stringify(event)).toString('base64') };
    const record = { messageId: 'm-9', body: JSON.stringify(wrapped), eventSource: 'aws:sqs', receiptHandle: 'r', attributes: {}, messageAttributes: {}, md5OfBody: '', eventSourceARN: 'arn:aws:sqs:eu-west-1:123456789012:jitr', awsRegion: 'eu-west-1' };

    expect(await harness.jitr({ Records: [record] } as never)).toEqual({ batchItemFailures: [] });
    expect(harness.aws.registry.findCertificate(event.certificateId)?.status).toBe('ACTIVE');
  });

  test.each([
    ['an empty event', {}],
    ['a certificate id that is not a fingerprint', { certificateId: 'abc', caCertificateId: 'f'.repeat(64), timestamp: 1, certificateStatus: 'PENDING_ACTIVATION', awsAccountId: '1', certificateRegistrationTimestamp: '1' }],
    ['not an object', 'hello'],
  ])('drops %s as MALFORMED_EVENT without touching AWS or the store', async (_case, event) => {
    const describeCalls = harness.aws.iot.commandCalls(UpdateCertificateCommand).length;
    const outcome = await harness.jitr(event);
    expect(outcome).toMatchObject({ outcome: 'MALFORMED_EVENT' });
    expect(harness.aws.iot.commandCalls(UpdateCertificateCommand).length).toBe(describeCalls);
  });
});
