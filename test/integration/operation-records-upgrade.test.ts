import { UpstreamError } from '../../functions/core/errors';
import { operationIdOf } from '../../functions/core/operations';
import type { OperationRecord } from '../../functions/core/model';
import type { DynamoDbDeviceStore } from '../../functions/adapters/aws/dynamodb-device-store';
import { createTestTable, type TestTable } from '../support/dynamodb';
import { createLifecycleFixture, type LifecycleFixture } from '../support/lifecycle-fixture';
import { makeCsr } from '../support/pki';
import { inspectCertificate } from '../../functions/core/x509';

/**
 * Operation records written by the previous version, resumed by this one, on DynamoDB Local. The previous version
 * saved the certificate itself in an issuance's progress (`certificatePem`, `certificateChainPem`); this one keeps
 * only the issuance id and collects the certificate again. A PENDING record of the previous version must go on from
 * the certificate it holds (the CA may not answer for it any more), never issue or collect a second one.
 */
const ACTOR = 'arn:aws:iam::123456789012:role/factory';
const COMMIT_SECONDS = 3600;

describe("an issuance's operation record, of the previous version and of this one", () => {
  let table: TestTable;
  let fixture: LifecycleFixture<DynamoDbDeviceStore>;
  beforeAll(async () => {
    table = await createTestTable();
    fixture = await createLifecycleFixture({ rotationCommitSeconds: COMMIT_SECONDS }, table.store);
  });
  afterAll(async () => {
    await table.drop();
  });
  afterEach(() => {
    jest.restoreAllMocks();
  });

  /** The record as the previous version would have left it: the collected certificate saved in the progress. */
  async function rewriteAsPreviousVersion(operationId: string): Promise<{ certificatePem: string }> {
    const pending = (await table.store.getOperation(operationId)) as OperationRecord;
    expect(pending).toMatchObject({ status: 'PENDING', progress: { issuanceId: expect.any(String) } });
    expect(pending.progress?.certificatePem).toBeUndefined(); // this version does not save it
    const issued = await fixture.ca.collectCertificate(pending.progress?.issuanceId as string);
    await table.store.commit({
      operation: { next: { ...pending, progress: { ...pending.progress, certificatePem: issued.certificatePem, certificateChainPem: issued.certificateChainPem }, version: pending.version + 1 }, expectedVersion: pending.version },
      events: [],
    });
    return issued;
  }

  test('an issuance left PENDING with its certificate in the progress is finished with that certificate: the CA is not asked again, one certificate ACTIVE on record and in AWS IoT', async () => {
    const deviceId = 'upgrade-issue-1';
    await fixture.lifecycle.preRegisterDevice({ deviceId, attributes: {}, actor: ACTOR, requestKey: `pre-${deviceId}` });
    const request = { deviceId, csrPem: (await makeCsr(deviceId)).csrPem, actor: ACTOR, requestKey: `issue-${deviceId}` };
    // The first attempt stops after the CA signed: AWS IoT fails to register the certificate.
    jest.spyOn(fixture.registry, 'registerCertificate').mockRejectedValueOnce(new UpstreamError('UPSTREAM_FAILURE', 'AWS IoT RegisterCertificate failed (InternalFailure).', true));
    await expect(fixture.lifecycle.issueFromCsr(request)).rejects.toMatchObject({ code: 'UPSTREAM_FAILURE' });
    const saved = await rewriteAsPreviousVersion(operationIdOf(ACTOR, request.requestKey));
    // The CA cannot answer for it now (e.g. another CA since): the retry must not need it.
    const collect = jest.spyOn(fixture.ca, 'collectCertificate').mockRejectedValue(new UpstreamError('UPSTREAM_FAILURE', 'the CA cannot be reached', true));
    const issue = jest.spyOn(fixture.ca, 'requestCertificate');

    const answer = await fixture.lifecycle.issueFromCsr(request);

    expect(answer.certificatePem).toBe(saved.certificatePem);
    expect(collect).not.toHaveBeenCalled();
    expect(issue).not.toHaveBeenCalled();
    expect((await table.store.listDeviceCertificates(deviceId)).map((certificate) => [certificate.certificateId, certificate.status])).toEqual([[answer.certificateId, 'ACTIVE']]);
    expect(fixture.registry.findCertificate(answer.certificateId)?.status).toBe('ACTIVE');
    expect(fixture.registry.findThing(deviceId)?.principals).toEqual([answer.certificateId]);
    expect(await table.store.getOperation(operationIdOf(ACTOR, request.requestKey))).toMatchObject({ status: 'DONE', outcome: { certificateId: answer.certificateId } });
  });

  test('an issuance of this version whose CA cannot answer at the retry stays PENDING and answers retryably; the next retry hands out the one certificate issued', async () => {
    const deviceId = 'upgrade-issue-2';
    await fixture.lifecycle.preRegisterDevice({ deviceId, attributes: {}, actor: ACTOR, requestKey: `pre-${deviceId}` });
    const request = { deviceId, csrPem: (await makeCsr(deviceId)).csrPem, actor: ACTOR, requestKey: `issue-${deviceId}` };
    const issue = jest.spyOn(fixture.ca, 'requestCertificate');
    jest.spyOn(fixture.registry, 'registerCertificate').mockRejectedValueOnce(new UpstreamError('UPSTREAM_FAILURE', 'AWS IoT RegisterCertificate failed (InternalFailure).', true));
    await expect(fixture.lifecycle.issueFromCsr(request)).rejects.toMatchObject({ code: 'UPSTREAM_FAILURE' });
    jest.spyOn(fixture.ca, 'collectCertificate').mockRejectedValueOnce(new UpstreamError('UPSTREAM_THROTTLED', 'AWS Private CA GetCertificate is throttled; try again later.', true));

    await expect(fixture.lifecycle.issueFromCsr(request)).rejects.toMatchObject({ code: 'UPSTREAM_THROTTLED' });
    expect(await table.store.getOperation(operationIdOf(ACTOR, request.requestKey))).toMatchObject({ status: 'PENDING' });
    expect(await table.store.listDeviceCertificates(deviceId)).toEqual([]);
    const answer = await fixture.lifecycle.issueFromCsr(request);

    expect(issue).toHaveBeenCalledTimes(1);
    expect((await table.store.listDeviceCertificates(deviceId)).map((certificate) => [certificate.certificateId, certificate.status])).toEqual([[answer.certificateId, 'ACTIVE']]);
    expect(fixture.registry.findCertificate(answer.certificateId)?.status).toBe('ACTIVE');
    expect(fixture.registry.findThing(deviceId)?.principals).toEqual([answer.certificateId]);
  });

  test('a rotation abandoned after the CA signed, its record of the previous version: the sweep withdraws the saved certificate without the CA collecting it, and the device may rotate again', async () => {
    const deviceId = 'upgrade-rotate-1';
    await fixture.lifecycle.preRegisterDevice({ deviceId, attributes: {}, actor: ACTOR, requestKey: `pre-${deviceId}` });
    const { certificateId: previous } = await fixture.lifecycle.issueFromCsr({ deviceId, csrPem: (await makeCsr(deviceId)).csrPem, actor: ACTOR, requestKey: `issue-${deviceId}` });
    const sender = { thingName: deviceId, clientId: deviceId, principal: previous };
    jest.spyOn(fixture.registry, 'attachCertificate').mockRejectedValueOnce(new UpstreamError('UPSTREAM_FAILURE', 'AWS IoT AttachThingPrincipal failed (InternalFailure).', true));
    await expect(fixture.lifecycle.requestRotation({ ...sender, requestId: 'lost-1', csrPem: (await makeCsr(deviceId)).csrPem })).rejects.toMatchObject({ code: 'UPSTREAM_FAILURE' });
    expect(await table.store.getDevice(deviceId)).toMatchObject({ rotation: { state: 'ISSUING', requestId: 'lost-1' } });
    const saved = await rewriteAsPreviousVersion(operationIdOf(`device:${deviceId}`, 'rotate:lost-1'));
    const leaked = (await inspectCertificate(saved.certificatePem)).certificateId;
    expect(fixture.registry.findCertificate(leaked)?.status).toBe('ACTIVE'); // registered, never attached nor recorded
    const collect = jest.spyOn(fixture.ca, 'collectCertificate').mockRejectedValue(new UpstreamError('UPSTREAM_FAILURE', 'the CA cannot be reached', true));
    fixture.clock.advance(COMMIT_SECONDS * 1000);

    expect(await fixture.lifecycle.sweepDueRotations()).toEqual({ withdrawn: 1, committed: 0, failed: 0 });

    expect(collect).not.toHaveBeenCalled();
    const { serialNumber } = await inspectCertificate(saved.certificatePem);
    expect(await fixture.ca.isRevoked(serialNumber)).toBe(true);
    expect(fixture.registry.findCertificate(leaked)?.status).toBe('REVOKED');
    expect(fixture.registry.findThing(deviceId)?.principals).toEqual([previous]);
    expect(fixture.registry.findCertificate(previous)?.status).toBe('ACTIVE');
    expect((await table.store.getDevice(deviceId))?.rotation).toBeUndefined();
  });
});
