import type { SQSEvent } from 'aws-lambda';
import { Logger } from '@aws-lambda-powertools/logger';
import { UpstreamError } from '../../../functions/core/errors';
import { createRotationHandler } from '../../../functions/handlers/rotation';
import { rotationRuleSql, ruleMessageOf } from '../../../functions/handlers/mqtt/rotation-protocol';
import { createLifecycleFixture } from '../../support/lifecycle-fixture';
import { makeCsr } from '../../support/pki';

const quiet = new Logger({ serviceName: 'rotation-test', logLevel: 'SILENT' });

async function setup() {
  const fixture = await createLifecycleFixture();
  const published: { topic: string; message: Record<string, unknown> }[] = [];
  const handler = createRotationHandler({ lifecycle: fixture.lifecycle, messenger: { publish: async (topic, message) => void published.push({ topic, message: { ...message } }) }, logger: quiet });
  await fixture.lifecycle.preRegisterDevice({ deviceId: 'valve-1', attributes: {}, actor: 'test', requestKey: 'pre' });
  const issued = await fixture.lifecycle.issueFromCsr({ deviceId: 'valve-1', csrPem: (await makeCsr('valve-1')).csrPem, actor: 'test', requestKey: 'issue' });
  return { fixture, handler, published, principal: issued.certificateId };
}

const sender = (principal: string) => ({ clientId: 'valve-1', principal });

describe('the rotation function', () => {
  test('answers a rotation request on rotate/accepted with the certificate and its commit deadline', async () => {
    const { handler, published, principal } = await setup();
    const message = ruleMessageOf('rotate', { requestId: 'r-1', csr: (await makeCsr('valve-1')).csrPem }, 'devices/valve-1/certificates/rotate', sender(principal));

    const result = await handler(message);

    expect(result).toMatchObject({ kind: 'answered', step: 'rotate', topic: 'devices/valve-1/certificates/rotate/accepted' });
    expect(published).toHaveLength(1);
    expect(published[0]?.topic).toBe('devices/valve-1/certificates/rotate/accepted');
    expect(Object.keys(published[0]?.message ?? {}).sort()).toEqual(['certificateChainPem', 'certificateId', 'certificatePem', 'commitDeadline', 'notAfter', 'requestId']);
  });

  test('a message without the fields it needs is answered on rotate/rejected with INVALID_REQUEST, naming the field', async () => {
    const { handler, published, principal } = await setup();

    await handler(ruleMessageOf('rotate', { requestId: 'r-2' }, 'devices/valve-1/certificates/rotate', sender(principal)));
    await handler(ruleMessageOf('commit', 'not json', 'devices/valve-1/certificates/commit', sender(principal)));

    expect(published.map((p) => [p.topic, p.message.code, p.message.requestId])).toEqual([
      ['devices/valve-1/certificates/rotate/rejected', 'INVALID_REQUEST', 'r-2'],
      ['devices/valve-1/certificates/commit/rejected', 'INVALID_REQUEST', null],
    ]);
    expect(published[0]?.message.message).toContain('csr');
  });

  test('a device field named like the rule\'s sender fields cannot spoof the sender', async () => {
    const { handler, published, principal } = await setup();
    const spoofed = ruleMessageOf('rotate', { requestId: 'r-3', csr: (await makeCsr('valve-1')).csrPem, mqttPrincipal: principal, mqttClientId: 'valve-1' }, 'devices/valve-1/certificates/rotate', {
      clientId: 'intruder',
      principal: '0'.repeat(64),
    });

    await handler(spoofed);

    expect(published[0]?.message).toMatchObject({ requestId: 'r-3', code: 'PRINCIPAL_NOT_ALLOWED' });
    expect(rotationRuleSql('rotate')).toBe(
      "SELECT requestId, csr, topic() AS mqttTopic, clientid() AS mqttClientId, principal() AS mqttPrincipal FROM 'devices/+/certificates/rotate'",
    );
  });

  test('a message that is not on a rotation topic is dropped without an answer', async () => {
    const { handler, published, principal } = await setup();

    expect(await handler(ruleMessageOf('rotate', {}, 'devices/valve-1/telemetry', sender(principal)))).toEqual({ kind: 'dropped', reason: 'not a rotation message' });
    expect(published).toHaveLength(0);
  });

  test('in a batch from SQS, a retryable failure is redelivered and the others are answered', async () => {
    const { fixture, handler, published, principal } = await setup();
    jest.spyOn(fixture.ca, 'requestCertificate').mockRejectedValueOnce(new UpstreamError('UPSTREAM_THROTTLED', 'IssueCertificate throttled', true));
    const records = [
      ruleMessageOf('rotate', { requestId: 'r-4', csr: (await makeCsr('valve-1')).csrPem }, 'devices/valve-1/certificates/rotate', sender(principal)),
      ruleMessageOf('commit', { requestId: 'r-unknown', certificateId: 'a'.repeat(64) }, 'devices/valve-1/certificates/commit', sender('a'.repeat(64))),
    ].map((body, index) => ({ messageId: `m-${index}`, body: JSON.stringify(body), eventSource: 'aws:sqs' }));

    const response = await handler({ Records: records } as unknown as SQSEvent);

    expect(response).toEqual({ batchItemFailures: [{ itemIdentifier: 'm-0' }] });
    expect(published.map((p) => [p.topic, p.message.code])).toEqual([['devices/valve-1/certificates/commit/rejected', 'NO_ROTATION_PENDING']]);
  });

  test('the scheduled event runs the sweep', async () => {
    const { handler } = await setup();

    expect(await handler({ 'detail-type': 'Scheduled Event', source: 'aws.events' })).toEqual({ kind: 'swept', withdrawn: 0, committed: 0, failed: 0 });
  });
});
