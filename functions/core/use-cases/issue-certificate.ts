import { ConflictError, InvalidTransitionError, LifecycleError, NotFoundError } from '../errors';
import { assertValidDeviceId } from '../device-id';
import type { AuditEvent, CertificateRecord, CertificateSource, Device, OperationOutcome } from '../model';
import type { RunningOperation } from '../operations';
import { deviceAcceptsNewCertificates } from '../state-machines';
import { checkCsr, inspectCertificate, splitPemChain, type CertificateFacts } from '../x509';
import type { Actor, ChangeRecorder } from '../change-recorder';

export interface IssueFromCsrRequest extends Actor {
  readonly deviceId: string;
  readonly csrPem: string;
}

export interface IssuedDeviceCertificate {
  readonly certificateId: string;
  readonly certificatePem: string;
  readonly certificateChainPem: string;
  readonly notAfter: string;
}

/**
 * Signs a CSR through the CA and makes the certificate usable: registered ACTIVE with AWS IoT (read back),
 * attached to the thing, recorded. The steps, each idempotent:
 *  1. the CA accepts the request and its issuance id is kept in the operation's progress, so a retry collects the
 *     same certificate (again: collecting is idempotent) and never issues a second one;
 *  2. AWS IoT registers it; registered before (a retry), its status is read back and must be ACTIVE;
 *  3. it is attached, then recorded together with the operation's DONE, on condition that the device did not change.
 * A failure at any step leaves the operation PENDING and the retry goes on from there: nothing whose outcome is
 * unknown is undone. Only a definite refusal (the device stopped accepting certificates, or someone revoked the
 * new certificate) withdraws what this operation issued: revoked at the CA and in AWS IoT, recorded REVOKED,
 * and the operation WITHDRAWN, so every retry gets the same refusal and never the certificate.
 */
export async function issueCertificate(recorder: ChangeRecorder, request: IssueFromCsrRequest): Promise<IssuedDeviceCertificate> {
  assertValidDeviceId(request.deviceId);
  const { csrPem } = await checkCsr(request.csrPem, request.deviceId);
  return recorder.operations.execute(
    { caller: request.actor, handle: request.requestKey, operation: 'ISSUE_CERTIFICATE', target: request.deviceId, payload: { deviceId: request.deviceId, csr: csrPem } },
    (run) => issueSteps(recorder, run, { ...request, csrPem }, API_ISSUANCE),
    async (record) => answerRecorded(recorder, record.outcome?.certificateId),
  );
}

/** What differs between a certificate issued through the API and one a device asks for when it rotates. */
export interface IssuancePlan {
  readonly source: CertificateSource;
  /** Why the device may not receive the certificate now, if so: asked before the CA is, and again before recording (then it withdraws). */
  readonly refusal: (device: Device) => Promise<LifecycleError | undefined>;
  /** The device's next record, the events beside CERTIFICATE_ISSUED and the outcome's extra fields, in the change that records the certificate. */
  readonly record: (
    device: Device,
    certificateId: string,
    key: string,
  ) => {
    readonly device: Device;
    readonly events: readonly AuditEvent[];
    readonly outcome?: Partial<OperationOutcome>;
    readonly certificate?: Pick<CertificateRecord, 'rotatedFrom'>;
    /** A record the decision rests on: written back unchanged but for its version, so a concurrent change of it is a conflict. */
    readonly unchanged?: CertificateRecord;
  };
}

const API_ISSUANCE: IssuancePlan = {
  source: 'CSR',
  refusal: async (device) => (deviceAcceptsNewCertificates(device.status) ? undefined : refusalFor(device)),
  record: (device) => ({ device: { ...device, status: 'ACTIVE' }, events: [] }),
};

/**
 * The issuance steps shared by the API and rotation; `request.csrPem` is already checked.
 * Answers the certificate once it is recorded (the operation is then DONE).
 */
export async function issueSteps(recorder: ChangeRecorder, run: RunningOperation, request: IssueFromCsrRequest, plan: IssuancePlan): Promise<IssuedDeviceCertificate> {
  const { csrPem } = request;
  let device = await recorder.requireDevice(request.deviceId);
  if (run.progress.issuanceId === undefined) {
    // Refused before anything is issued: nothing to withdraw.
    const refusal = await plan.refusal(device);
    if (refusal) throw refusal;
    const { issuanceId } = await recorder.ca.requestCertificate({ csrPem, validityDays: recorder.settings.validityDays, idempotencyToken: run.record.operationId.slice(0, 36) });
    // Saved before collecting: the CA's idempotency token is honoured only for a while (Private CA: 5 minutes), the id for good.
    await run.saveProgress({ issuanceId });
  }
  // Collected again by a retry rather than saved (collecting is idempotent): the operation record stays small, one write fewer.
  // (Records of an earlier version may hold the certificate itself.)
  const issued =
    run.progress.certificatePem === undefined
      ? await recorder.ca.collectCertificate(run.progress.issuanceId as string)
      : { certificatePem: run.progress.certificatePem, certificateChainPem: run.progress.certificateChainPem ?? '' };
  const { certificatePem, certificateChainPem } = issued;
  const facts = await inspectCertificate(certificatePem);
  const withdrawFor = (refusal: LifecycleError) => withdraw(recorder, run, request.actor, device, facts, refusal, plan.source);
  if (run.progress.withdrawal !== undefined) {
    return withdrawFor(new LifecycleError(run.progress.withdrawal as LifecycleError['code'], run.progress.withdrawalReason ?? 'The certificate was withdrawn.'));
  }
  const refusedNow = await plan.refusal(device);
  if (refusedNow) return withdrawFor(refusedNow);

  const caCertificatePem = splitPemChain(certificateChainPem)[0] ?? (await recorder.ca.getCaCertificates()).certificatePem;
  await recorder.registry.ensureThing(device.thingName, device.attributes);
  const { certificateId, alreadyRegistered } = await recorder.registry.registerCertificate({ certificatePem, caCertificatePem });
  // Registered just now, it is ACTIVE. Registered before (a retry of this request), its status is as someone may have
  // left it: read it back before handing it out. (No DescribeCertificate, 10 TPS by default, on the first attempt.)
  const status = alreadyRegistered ? (await recorder.registry.describeCertificate(certificateId)).status : 'ACTIVE';
  if (status !== 'ACTIVE') {
    return withdrawFor(new LifecycleError('CERTIFICATE_WITHDRAWN', `The certificate issued for this request is ${status} in AWS IoT; send a new request with a new ${run.record.operation === 'ISSUE_CERTIFICATE' ? 'Idempotency-Key' : 'requestId'}.`, { details: { certificateId } }));
  }
  await recorder.registry.attachCertificate(device.thingName, certificateId);

  // The first attempt records on the device as read above (the write is conditioned on its version); a conflict re-reads it.
  let known: Device | undefined = device;
  return recorder.retryOnConflict(async () => {
    device = known ?? (await recorder.requireDevice(request.deviceId));
    known = undefined;
    const refusal = await plan.refusal(device);
    if (refusal) return withdrawFor(refusal);
    const key = run.record.operationId;
    const planned = plan.record(recorder.touched(device), certificateId, key);
    await run.finish(
      {
        device: { next: planned.device, expectedVersion: device.version },
        certificates: [
          { next: { ...recorder.newCertificateRecord(facts, request.deviceId, 'ACTIVE', plan.source), ...planned.certificate } },
          ...(planned.unchanged ? [{ next: { ...planned.unchanged, updatedAt: recorder.now(), version: planned.unchanged.version + 1 }, expectedVersion: planned.unchanged.version }] : []),
        ],
        events: [
          recorder.event('CERTIFICATE_ISSUED', request.actor, key, { deviceId: request.deviceId, certificateId, toStatus: 'ACTIVE', ...(plan.source === 'ROTATION' ? { reason: 'rotation' } : {}) }),
          ...(device.status === 'REGISTERED' && planned.device.status === 'ACTIVE'
            ? [recorder.event('DEVICE_ACTIVATED', request.actor, key, { deviceId: request.deviceId, fromStatus: 'REGISTERED', toStatus: 'ACTIVE' })]
            : []),
          ...planned.events,
        ],
      },
      { certificateId, ...planned.outcome },
    );
    return { certificateId, certificatePem, certificateChainPem, notAfter: facts.notAfter.toISOString() };
  });
}

/**
 * Undoes what this operation issued, for good: the reason is saved first, so a retry after a failure here
 * finishes the withdrawal instead of handing the certificate out. Then throws the refusal.
 */
async function withdraw(recorder: ChangeRecorder, run: RunningOperation, actor: string, device: Device, facts: CertificateFacts, refusal: LifecycleError, source: CertificateSource): Promise<never> {
  if (run.progress.withdrawal === undefined) await run.saveProgress({ withdrawal: refusal.code, withdrawalReason: refusal.message.slice(0, 500) });
  const { certificateId } = facts;
  await recorder.ca.revokeCertificate({ serialNumber: facts.serialNumber, reason: 'PRIVILEGE_WITHDRAWN', certificatePem: facts.certificatePem });
  let registered = true;
  try {
    await recorder.registry.updateCertificateStatus(certificateId, 'REVOKED');
  } catch (error) {
    if (!(error instanceof NotFoundError)) throw error;
    registered = false;
  }
  if (registered) await recorder.registry.detachCertificate(device.thingName, certificateId);
  const reason = `withdrawn: ${refusal.message}`.slice(0, 500);
  const existing = await recorder.store.getCertificate(certificateId);
  const record = existing
    ? existing.status === 'REVOKED'
      ? undefined
      : { next: recorder.withStatus(existing, 'REVOKED', { revocationReason: 'PRIVILEGE_WITHDRAWN', statusReason: reason }), expectedVersion: existing.version }
    : { next: { ...recorder.newCertificateRecord(facts, device.deviceId, 'REVOKED', source), revocationReason: 'PRIVILEGE_WITHDRAWN' as const, statusReason: reason } };
  try {
    await run.withdraw(
      {
        certificates: record ? [record] : [],
        events: record ? [recorder.event('CERTIFICATE_REVOKED', actor, run.record.operationId, { deviceId: device.deviceId, certificateId, fromStatus: existing?.status, toStatus: 'REVOKED', reason })] : [],
      },
      { certificateId, error: { code: refusal.code, message: refusal.message } },
    );
  } catch (error) {
    // Lost a race on the certificate record: the retry re-reads it and finishes the withdrawal.
    if (error instanceof ConflictError) throw new ConflictError('The certificate record changed while the issuance was being withdrawn; retry with the same Idempotency-Key (or requestId).', { cause: error });
    throw error;
  }
  throw refusal;
}

/** The answer of an issuance finished before, rebuilt from the record, and only while the certificate is still ACTIVE. */
export async function answerRecorded(recorder: ChangeRecorder, certificateId: string | undefined): Promise<IssuedDeviceCertificate> {
  const certificate = certificateId === undefined ? undefined : await recorder.store.getCertificate(certificateId);
  if (!certificate) throw new LifecycleError('CERTIFICATE_WITHDRAWN', 'The certificate issued for this request is no longer on record; send a new request with a new Idempotency-Key.');
  // The record follows AWS IoT (a revocation or suspension changes AWS IoT first): it is asked too, at the moment of answering.
  const status = certificate.status === 'ACTIVE' ? (await recorder.registry.describeCertificate(certificate.certificateId)).status : certificate.status;
  if (status === 'INACTIVE') {
    // Not withdrawn: its device is suspended, and the certificate comes back when the device is resumed.
    throw new LifecycleError('INVALID_TRANSITION', `The certificate issued for this request is INACTIVE while device ${certificate.deviceId ?? ''} is suspended; resume the device, then retry with the same Idempotency-Key.`, {
      details: { certificateId: certificate.certificateId, status },
    });
  }
  if (status !== 'ACTIVE') {
    throw new LifecycleError('CERTIFICATE_WITHDRAWN', `The certificate issued for this request is now ${status}; send a new request with a new Idempotency-Key.`, {
      details: { certificateId: certificate.certificateId, status },
    });
  }
  const ca = await recorder.ca.getCaCertificates();
  return {
    certificateId: certificate.certificateId,
    certificatePem: certificate.certificatePem,
    certificateChainPem: [ca.certificatePem, ...splitPemChain(ca.certificateChainPem)].join(''),
    notAfter: certificate.notAfter,
  };
}

const refusalFor = (device: Device): InvalidTransitionError =>
  new InvalidTransitionError('DEVICE', device.status, 'ACTIVE', { details: { deviceId: device.deviceId, hint: 'Only REGISTERED or ACTIVE devices receive new certificates.' } });
