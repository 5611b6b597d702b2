import { InvalidTransitionError, LifecycleError, NotFoundError, ValidationError } from '../errors';
import { assertValidDeviceId } from '../device-id';
import type { CertificateRecord, Device, PendingRotation } from '../model';
import { isLiveCertificateStatus } from '../state-machines';
import { checkCsr, inspectCertificate } from '../x509';
import type { ChangeRecorder } from '../change-recorder';
import { answerRecorded, issueSteps, type IssuedDeviceCertificate, type IssuancePlan } from './issue-certificate';
import { operationIdOf, type RunningOperation } from '../operations';
import { BOOTSTRAP_ORGANIZATIONAL_UNIT, purposeOf } from '../certificate-purpose';

/**
 * Who sent an MQTT message, as AWS IoT's rules engine tells it: the topic's thing name, `clientid()` and
 * `principal()` (for a certificate connection, the certificate's id).
 */
export interface MqttSender {
  readonly thingName: string;
  readonly clientId: string;
  readonly principal: string;
}

export interface RotationRequest extends MqttSender {
  readonly requestId: string;
  readonly csrPem: string;
}

export interface RotatedCertificate extends IssuedDeviceCertificate {
  readonly requestId: string;
  readonly commitDeadline: string;
}

export interface RotationCommit extends MqttSender {
  readonly requestId: string;
  readonly certificateId: string;
}

export interface CommittedRotation {
  readonly requestId: string;
  readonly certificateId: string;
  readonly retiredCertificateId: string;
}

/** What one sweep over due rotations did. */
export interface RotationSweepResult {
  readonly withdrawn: number;
  readonly committed: number;
  readonly failed: number;
}

/** A device's request id: what the device can make unique cheaply (a counter, a UUID, a timestamp). */
const REQUEST_ID = /^[A-Za-z0-9_.:-]{1,64}$/;

/** The caller of a device's own operations: the thing, whatever session or client it connects with. */
const deviceCaller = (thingName: string): string => `device:${thingName}`;

/**
 * Phase one of a rotation: a device connected with a live certificate asks for a new one, with a new key.
 * Issued like `POST /devices/{id}/certificates` (same CSR rules, same durable steps), then recorded as the device's
 * pending rotation; the previous certificate stays ACTIVE until the commit. The same requestId answers the same
 * certificate again; another one while a rotation is pending is refused with ROTATION_IN_PROGRESS.
 */
export async function requestRotation(recorder: ChangeRecorder, request: RotationRequest): Promise<RotatedCertificate> {
  assertSender(request);
  assertRequestId(request.requestId);
  const { csrPem, publicKeySha256, purpose } = await checkCsr(request.csrPem, request.thingName);
  if (purpose === 'BOOTSTRAP') {
    // A rotation makes the device's working certificate; its bootstrap certificate is made at manufacture, never over MQTT.
    throw new ValidationError('INVALID_CSR', `A rotation CSR must not ask for OU=${BOOTSTRAP_ORGANIZATIONAL_UNIT}: rotation issues an operational certificate; leave the OU out.`);
  }
  return recorder.operations.execute(
    { caller: deviceCaller(request.thingName), handle: `rotate:${request.requestId}`, operation: 'ROTATE_CERTIFICATE', target: request.thingName, payload: { csr: csrPem } },
    async (run) => {
      if (run.progress.issuanceId === undefined) {
        await assertNewKey(recorder, request.thingName, publicKeySha256);
        await markIssuing(recorder, run, request);
      }
      // The requesting certificate as the last refusal check saw it ACTIVE: the recording write holds it unchanged.
      let principalSeen: CertificateRecord | undefined;
      const plan: IssuancePlan = {
        source: 'ROTATION',
        refusal: async (device) => {
          const refusal = (await rotationRefusal(recorder, device, request)) ?? markerRefusal(device, request.requestId);
          principalSeen = refusal ? undefined : await recorder.store.getCertificate(request.principal);
          return refusal;
        },
        record: (device, certificateId, key) => {
          // The certificate chosen when the slot was taken (markerRefusal has just checked the slot is this request's).
          const previousCertificateId = device.rotation?.previousCertificateId ?? request.principal;
          const rotation: PendingRotation = {
            state: 'PENDING',
            requestId: request.requestId,
            certificateId,
            previousCertificateId,
            commitDeadline: new Date(recorder.deps.clock.now().getTime() + recorder.settings.rotationCommitSeconds * 1000).toISOString(),
          };
          return {
            device: { ...device, rotation },
            events: [
              recorder.event('ROTATION_STARTED', deviceCaller(request.thingName), key, {
                deviceId: device.deviceId,
                certificateId,
                reason: `request ${request.requestId} from certificate ${request.principal}${previousCertificateId === request.principal ? '' : ` (bootstrap), replacing ${previousCertificateId}`}`,
              }),
            ],
            outcome: { commitDeadline: rotation.commitDeadline },
            certificate: { rotatedFrom: previousCertificateId },
            unchanged: principalSeen,
          };
        },
      };
      const issued = await issueSteps(recorder, run, { actor: deviceCaller(request.thingName), requestKey: request.requestId, deviceId: request.thingName, csrPem }, plan);
      return { ...issued, requestId: request.requestId, commitDeadline: run.record.outcome?.commitDeadline ?? '' };
    },
    async (record) => {
      const issued = await answerRecorded(recorder, record.outcome?.certificateId);
      return { ...issued, requestId: request.requestId, commitDeadline: record.outcome?.commitDeadline ?? '' };
    },
  ).catch((error: unknown) => refusalWithRetryAfter(recorder, request.thingName, error));
}

/**
 * A request that lost the race for the device's rotation slot after the CA signed is withdrawn, and its replays answer
 * the recorded code alone: like the first refusal, they say how long the rotation in flight now has left (`retryAfter`,
 * at least 1 second; 1 when none is in flight any more: a new request may start at once).
 */
async function refusalWithRetryAfter(recorder: ChangeRecorder, thingName: string, error: unknown): Promise<never> {
  if (!(error instanceof LifecycleError) || error.code !== 'ROTATION_IN_PROGRESS' || typeof error.details.retryAfter === 'number') throw error;
  const rotation = (await recorder.store.getDevice(thingName))?.rotation;
  const retryAfter = rotation ? Math.max(1, Math.ceil((Date.parse(rotation.commitDeadline) - recorder.deps.clock.now().getTime()) / 1000)) : 1;
  throw new LifecycleError(error.code, error.message, {
    cause: error.cause,
    details: { ...error.details, ...(rotation ? { requestId: rotation.requestId, commitDeadline: rotation.commitDeadline } : {}), retryAfter },
  });
}

/**
 * Phase two: the device, connected with the new certificate, commits it. The decision is one write on the device
 * (its pending rotation becomes COMMITTING), so a commit and the deadline's withdrawal never both win; then the
 * previous certificate is switched INACTIVE and detached in AWS IoT and recorded RETIRED. It is not revoked at the
 * CA: AWS IoT refuses it already, and superseded certificates on the CRL would only make it grow.
 */
/**
 * Before the CA is asked: the device's rotation slot is taken (`ISSUING`, with a deadline), in the same write as the
 * operation record. So one rotation is in flight per device from the start, and a request that fails after the CA signed
 * and is never sent again is still found by the sweep at its deadline, which withdraws what it issued.
 */
async function markIssuing(recorder: ChangeRecorder, run: RunningOperation, request: RotationRequest): Promise<void> {
  await recorder.retryOnConflict(async () => {
    const device = await recorder.requireDevice(request.thingName);
    const refusal = await rotationRefusal(recorder, device, request);
    if (refusal) throw refusal;
    if (device.rotation?.requestId === request.requestId) return; // taken by an earlier execution of this request
    const rotation: PendingRotation = {
      state: 'ISSUING',
      requestId: request.requestId,
      certificateId: '',
      previousCertificateId: await certificateToReplace(recorder, device, request),
      commitDeadline: new Date(recorder.deps.clock.now().getTime() + recorder.settings.rotationCommitSeconds * 1000).toISOString(),
    };
    await run.commit({ device: { next: { ...recorder.touched(device), rotation }, expectedVersion: device.version }, events: [] });
  });
}

/** Recording the new certificate needs this request's slot still `ISSUING`: withdrawn meanwhile (deadline, revocation), it is refused. */
function markerRefusal(device: Device, requestId: string): LifecycleError | undefined {
  if (device.rotation?.requestId === requestId && device.rotation.state === 'ISSUING') return undefined;
  return withdrawnRotation(requestId);
}

export async function commitRotation(recorder: ChangeRecorder, commit: RotationCommit): Promise<CommittedRotation> {
  assertSender(commit);
  assertRequestId(commit.requestId);
  if (commit.principal !== commit.certificateId) {
    throw new LifecycleError('PRINCIPAL_NOT_ALLOWED', 'A rotation is committed over a connection made with the new certificate: reconnect with it, then commit again.', {
      details: { certificateId: commit.certificateId },
    });
  }
  const caller = deviceCaller(commit.thingName);
  return recorder.operations.execute(
    // The handle alone names the commit: a wrong commit (another certificate id) refused under it must not block the right one.
    { caller, handle: `commit:${commit.requestId}`, operation: 'COMMIT_ROTATION', target: commit.thingName, payload: {} },
    async (run) => {
      const key = run.record.operationId;
      let rotation: PendingRotation | undefined;
      const finishedElsewhere = await recorder.retryOnConflict(async () => {
        const device = await recorder.requireDevice(commit.thingName);
        rotation = device.rotation;
        if (rotation === undefined || rotation.requestId !== commit.requestId || rotation.certificateId !== commit.certificateId) return committedOrRefused(recorder, commit);
        if (rotation.state === 'WITHDRAWING') throw withdrawnRotation(commit.requestId);
        if (rotation.state === 'COMMITTING') return undefined; // Decided by an earlier execution of this commit: finish it.
        if (device.status !== 'ACTIVE') throw new InvalidTransitionError('DEVICE', device.status, 'ACTIVE', { details: { deviceId: device.deviceId, hint: 'Only an ACTIVE device commits a rotation.' } });
        // Never retire the previous certificate for a new one that is no longer usable (revoked by an operator meanwhile).
        const issued = await recorder.store.getCertificate(rotation.certificateId);
        if (!issued || issued.status !== 'ACTIVE') throw withdrawnRotation(commit.requestId);
        rotation = { ...rotation, state: 'COMMITTING' };
        await run.commit({
          device: { next: { ...recorder.touched(device), rotation }, expectedVersion: device.version },
          // Written on condition that it is still the ACTIVE record just read: a revocation recorded meanwhile makes this a conflict, and the retry sees it.
          certificates: [{ next: { ...issued, updatedAt: recorder.now(), version: issued.version + 1 }, expectedVersion: issued.version }],
          events: [recorder.event('ROTATION_COMMITTED', caller, key, { deviceId: device.deviceId, certificateId: commit.certificateId, reason: `request ${commit.requestId}` })],
        });
        return undefined;
      });
      if (finishedElsewhere) {
        await run.finish({ events: [] }, finishedElsewhere);
        return { requestId: commit.requestId, ...finishedElsewhere };
      }
      const decided = rotation as PendingRotation;
      await finishCommit(recorder, commit.thingName, decided, caller, key);
      const outcome = { certificateId: decided.certificateId, retiredCertificateId: decided.previousCertificateId };
      await run.finish({ events: [] }, outcome);
      return { requestId: commit.requestId, ...outcome };
    },
    async (record) => ({ requestId: commit.requestId, certificateId: record.outcome?.certificateId ?? commit.certificateId, retiredCertificateId: record.outcome?.retiredCertificateId ?? '' }),
  );
}

/**
 * The deadline's side of the race: every rotation due by `now` that is still PENDING is withdrawn (the new certificate
 * revoked in AWS IoT and at the CA, the previous one left ACTIVE), and any decided rotation whose side effects did not
 * finish (a crash between the decision and the end) is finished. Each device is its own unit: one failure is counted and
 * left for the next sweep.
 */
export async function sweepDueRotations(recorder: ChangeRecorder, options: { readonly limit?: number; readonly onError?: (deviceId: string, error: unknown) => void } = {}): Promise<RotationSweepResult> {
  const now = recorder.deps.clock.now();
  let withdrawn = 0;
  let committed = 0;
  let failed = 0;
  let nextToken: string | undefined;
  do {
    const page = await recorder.store.findRotationsDue({ before: now, limit: options.limit ?? 100, ...(nextToken ? { nextToken } : {}) });
    for (const device of page.items) {
      if (!device.rotation) continue;
      try {
        const outcome = await withdrawOrFinish(recorder, device.deviceId, device.rotation.requestId);
        if (outcome === 'COMMITTED') committed += 1;
        else if (outcome === 'WITHDRAWN') withdrawn += 1;
      } catch (error) {
        failed += 1;
        options.onError?.(device.deviceId, error);
      }
    }
    nextToken = page.nextToken;
  } while (nextToken !== undefined);
  return { withdrawn, committed, failed };
}

const SWEEP_ACTOR = 'rotation-sweep';

/**
 * Withdraws a device's PENDING rotation now (its certificate revoked everywhere, the previous one kept), or finishes it
 * if it was decided already: the sweep after a deadline, and a revocation of either certificate of the rotation.
 */
export async function withdrawOrFinish(recorder: ChangeRecorder, deviceId: string, requestId: string): Promise<'COMMITTED' | 'WITHDRAWN' | 'FINISHED_ELSEWHERE'> {
  const key = `rotation-sweep:${deviceId}:${requestId}`;
  let rotation: PendingRotation | undefined;
  await recorder.retryOnConflict(async () => {
    const device = await recorder.requireDevice(deviceId);
    rotation = device.rotation;
    if (rotation === undefined || rotation.requestId !== requestId || (rotation.state !== 'PENDING' && rotation.state !== 'ISSUING')) return;
    rotation = { ...rotation, state: 'WITHDRAWING' };
    await recorder.store.commit({
      device: { next: { ...recorder.touched(device), rotation }, expectedVersion: device.version },
      events: [recorder.event('ROTATION_WITHDRAWN', SWEEP_ACTOR, key, { deviceId, certificateId: rotation.certificateId, reason: `no commit of request ${requestId} before ${rotation.commitDeadline}` })],
    });
  });
  if (rotation === undefined || rotation.requestId !== requestId) return 'FINISHED_ELSEWHERE'; // A commit (or another sweep) finished it meanwhile.
  if (rotation.state === 'COMMITTING') {
    await finishCommit(recorder, deviceId, rotation, SWEEP_ACTOR, key);
    return 'COMMITTED';
  }
  await finishWithdrawal(recorder, deviceId, rotation, key);
  return 'WITHDRAWN';
}

/** The previous certificate out of AWS IoT (INACTIVE, detached), then RETIRED on record and the rotation cleared. Idempotent. */
async function finishCommit(recorder: ChangeRecorder, deviceId: string, rotation: PendingRotation, actor: string, key: string): Promise<void> {
  const previous = await recorder.store.getCertificate(rotation.previousCertificateId);
  const device = await recorder.requireDevice(deviceId);
  if (previous && isLiveCertificateStatus(previous.status)) {
    try {
      await recorder.registry.updateCertificateStatus(previous.certificateId, 'INACTIVE');
    } catch (error) {
      // REVOKED in AWS IoT meanwhile (terminal): revoked is more than retired; the record follows its revocation.
      if (!(error instanceof LifecycleError && error.code === 'INVALID_TRANSITION') && !(error instanceof NotFoundError)) throw error;
    }
    await recorder.registry.detachCertificate(device.thingName, previous.certificateId);
  }
  await clearRotation(recorder, deviceId, rotation, (current) =>
    current && (current.status === 'ACTIVE' || current.status === 'INACTIVE')
      ? {
          next: recorder.withStatus(current, 'RETIRED', { statusReason: `replaced by ${rotation.certificateId} (rotation ${rotation.requestId})` }),
          event: recorder.event('CERTIFICATE_RETIRED', actor, key, { deviceId, certificateId: current.certificateId, fromStatus: current.status, toStatus: 'RETIRED' }),
        }
      : undefined,
    rotation.previousCertificateId,
  );
}

/** The new certificate revoked everywhere (the device never committed it), then REVOKED on record and the rotation cleared. Idempotent. */
async function finishWithdrawal(recorder: ChangeRecorder, deviceId: string, rotation: PendingRotation, key: string): Promise<void> {
  const device = await recorder.requireDevice(deviceId);
  if (rotation.certificateId === '') return finishIssuingWithdrawal(recorder, device, rotation);
  const issued = await recorder.store.getCertificate(rotation.certificateId);
  if (issued && issued.status !== 'REVOKED') await recorder.revokeEverywhere(device.thingName, issued, 'PRIVILEGE_WITHDRAWN');
  await clearRotation(recorder, deviceId, rotation, (current) =>
    current && current.status !== 'REVOKED' && current.status !== 'RETIRED' && current.status !== 'REJECTED'
      ? {
          next: recorder.withStatus(current, 'REVOKED', { revocationReason: 'PRIVILEGE_WITHDRAWN', statusReason: `rotation ${rotation.requestId} not committed before ${rotation.commitDeadline}` }),
          event: recorder.event('CERTIFICATE_REVOKED', SWEEP_ACTOR, key, { deviceId, certificateId: current.certificateId, fromStatus: current.status, toStatus: 'REVOKED', reason: 'rotation not committed' }),
        }
      : undefined,
    rotation.certificateId,
  );
}

/**
 * A rotation withdrawn before its certificate was recorded (the request failed after the CA and was not sent again, or a
 * revocation came first): what its operation had the CA issue (collected again by its issuance id) is revoked there and,
 * if AWS IoT has it, there too (not on record: there is none). A certificate the CA is still signing fails this sweep
 * (retryable) and the next one withdraws it; a request that never reached the CA leaves nothing to withdraw.
 */
async function finishIssuingWithdrawal(recorder: ChangeRecorder, device: Device, rotation: PendingRotation): Promise<void> {
  const progress = (await recorder.store.getOperation(operationIdOf(deviceCaller(device.deviceId), `rotate:${rotation.requestId}`)))?.progress;
  // Records of an earlier version hold the certificate itself; this version keeps only the issuance id.
  const certificatePem = progress?.certificatePem ?? (progress?.issuanceId === undefined ? undefined : (await recorder.ca.collectCertificate(progress.issuanceId)).certificatePem);
  if (certificatePem !== undefined) {
    const facts = await inspectCertificate(certificatePem);
    await recorder.ca.revokeCertificate({ serialNumber: facts.serialNumber, reason: 'PRIVILEGE_WITHDRAWN', certificatePem });
    try {
      await recorder.registry.updateCertificateStatus(facts.certificateId, 'REVOKED');
      await recorder.registry.detachCertificate(device.thingName, facts.certificateId);
    } catch (error) {
      if (!(error instanceof NotFoundError)) throw error; // never registered: nothing in AWS IoT to undo
    }
  }
  await clearRotation(recorder, device.deviceId, rotation, () => undefined, '');
}

/** One change: the certificate's new record (when it still needs one) and the device without its rotation. */
async function clearRotation(
  recorder: ChangeRecorder,
  deviceId: string,
  rotation: PendingRotation,
  nextCertificate: (current: CertificateRecord | undefined) => { next: CertificateRecord; event: ReturnType<ChangeRecorder['event']> } | undefined,
  certificateId: string,
): Promise<void> {
  await recorder.retryOnConflict(async () => {
    const device = await recorder.requireDevice(deviceId);
    if (device.rotation?.requestId !== rotation.requestId) return; // Cleared by another execution.
    const current = certificateId === '' ? undefined : await recorder.store.getCertificate(certificateId);
    const change = nextCertificate(current);
    const { rotation: _cleared, ...withoutRotation } = recorder.touched(device);
    await recorder.store.commit({
      device: { next: withoutRotation, expectedVersion: device.version },
      ...(change && current ? { certificates: [{ next: change.next, expectedVersion: current.version }] } : {}),
      events: change ? [change.event] : [],
    });
  });
}

function assertSender(sender: MqttSender): void {
  assertValidDeviceId(sender.thingName);
  if (sender.clientId !== sender.thingName) {
    throw new LifecycleError('PRINCIPAL_NOT_ALLOWED', `The client id must be the thing name (${sender.thingName}) to rotate its certificate.`, { details: { thingName: sender.thingName } });
  }
  if (!/^[0-9a-f]{64}$/.test(sender.principal)) {
    throw new LifecycleError('PRINCIPAL_NOT_ALLOWED', 'Only a device connected with its X.509 certificate may rotate it.', { details: { thingName: sender.thingName } });
  }
}

function assertRequestId(requestId: string): void {
  if (!REQUEST_ID.test(requestId)) throw new ValidationError('INVALID_REQUEST', 'requestId must be 1 to 64 characters: letters, digits, "_", ".", ":" or "-".');
}

/**
 * Why this device may not receive this rotation's certificate now: it must be ACTIVE, asking over a live certificate of
 * its own (not the pending new one), with no other rotation in flight.
 */
async function rotationRefusal(recorder: ChangeRecorder, device: Device, request: RotationRequest): Promise<LifecycleError | undefined> {
  if (device.status !== 'ACTIVE') {
    return new InvalidTransitionError('DEVICE', device.status, 'ACTIVE', { details: { deviceId: device.deviceId, hint: 'Only an ACTIVE device rotates its certificate.' } });
  }
  const rotation = device.rotation;
  if (rotation && rotation.requestId !== request.requestId) {
    const retryAfter = Math.max(1, Math.ceil((Date.parse(rotation.commitDeadline) - recorder.deps.clock.now().getTime()) / 1000));
    return new LifecycleError('ROTATION_IN_PROGRESS', `Rotation ${rotation.requestId} is in flight for this device: commit it, or send a new request after its deadline ${rotation.commitDeadline}.`, {
      details: { requestId: rotation.requestId, commitDeadline: rotation.commitDeadline, retryAfter },
    });
  }
  const principal = await recorder.store.getCertificate(request.principal);
  if (!principal || principal.deviceId !== device.deviceId || principal.status !== 'ACTIVE' || rotation?.certificateId === principal.certificateId) {
    return new LifecycleError('PRINCIPAL_NOT_ALLOWED', `The connection's certificate is not an ACTIVE certificate of ${device.deviceId} that may rotate: connect with the device's current certificate.`, {
      details: { deviceId: device.deviceId, principal: request.principal },
    });
  }
  if (purposeOf(principal) === 'BOOTSTRAP' && (await latestOperationalCertificate(recorder, device.deviceId)) === undefined) {
    return new LifecycleError(
      'PRINCIPAL_NOT_ALLOWED',
      `A bootstrap certificate replaces the device's operational certificate, and ${device.deviceId} has no ACTIVE one (revoked or retired certificates are not recovered this way): have its certificate issued through POST /devices/{deviceId}/certificates.`,
      { details: { deviceId: device.deviceId, principal: request.principal } },
    );
  }
  return undefined;
}

/**
 * The certificate a rotation replaces, and its commit retires: the requesting certificate, or, when the device asks
 * over its bootstrap certificate (recovery after expiry), its latest ACTIVE operational certificate (the expired or
 * refused one), never the bootstrap certificate itself, which stays ACTIVE.
 */
async function certificateToReplace(recorder: ChangeRecorder, device: Device, request: RotationRequest): Promise<string> {
  const principal = await recorder.store.getCertificate(request.principal);
  if (!principal || purposeOf(principal) !== 'BOOTSTRAP') return request.principal;
  const operational = await latestOperationalCertificate(recorder, device.deviceId);
  if (operational === undefined) throw new LifecycleError('PRINCIPAL_NOT_ALLOWED', `${device.deviceId} has no ACTIVE operational certificate for its bootstrap certificate to replace.`, { details: { deviceId: device.deviceId } });
  return operational.certificateId;
}

/** The device's ACTIVE operational certificate that expires last (expired ones included: recovering them is the point). */
async function latestOperationalCertificate(recorder: ChangeRecorder, deviceId: string): Promise<CertificateRecord | undefined> {
  let latest: CertificateRecord | undefined;
  for (const certificate of await recorder.store.listDeviceCertificates(deviceId)) {
    if (certificate.status !== 'ACTIVE' || purposeOf(certificate) !== 'OPERATIONAL') continue;
    if (latest === undefined || certificate.notAfter > latest.notAfter) latest = certificate;
  }
  return latest;
}

/** RFC 7030 re-key: a rotation brings a key no certificate of the device ever carried (a revoked or retired one's key above all). */
async function assertNewKey(recorder: ChangeRecorder, deviceId: string, publicKeySha256: string): Promise<void> {
  for (const certificate of await recorder.store.listDeviceCertificates(deviceId)) {
    if ((await inspectCertificate(certificate.certificatePem)).publicKeySha256 === publicKeySha256) {
      throw new ValidationError('INVALID_CSR', `The CSR carries the public key of certificate ${certificate.certificateId}: generate a new key pair for the rotation.`);
    }
  }
}

/**
 * A commit that matches no pending rotation: committed already (its decision finished by the sweep after this commit's
 * first try failed: answered as committed), withdrawn, or unknown.
 */
async function committedOrRefused(recorder: ChangeRecorder, commit: RotationCommit): Promise<{ certificateId: string; retiredCertificateId: string }> {
  const certificate = await recorder.store.getCertificate(commit.certificateId);
  const rotated = certificate?.deviceId === commit.thingName && certificate.source === 'ROTATION' ? certificate : undefined;
  if (rotated?.status === 'REVOKED') throw withdrawnRotation(commit.requestId);
  if (rotated?.status === 'ACTIVE' && rotated.rotatedFrom !== undefined) {
    const previous = await recorder.store.getCertificate(rotated.rotatedFrom);
    if (previous?.status === 'RETIRED') return { certificateId: rotated.certificateId, retiredCertificateId: previous.certificateId };
  }
  throw new LifecycleError('NO_ROTATION_PENDING', `No rotation ${commit.requestId} with certificate ${commit.certificateId} is pending for ${commit.thingName}.`, {
    details: { requestId: commit.requestId, certificateId: commit.certificateId },
  });
}

const withdrawnRotation = (requestId: string): LifecycleError =>
  new LifecycleError('CERTIFICATE_WITHDRAWN', `Rotation ${requestId} was not committed before its deadline and its certificate was withdrawn: keep the previous certificate and rotate again.`, {
    details: { requestId },
  });
