import type { LocalDeviceRegistry, LocalRegistryCertificate } from '../../functions/adapters/local/local-device-registry';
import type { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import type { AuditEvent, CertificateRecord, Device } from '../../functions/core/model';
import type { DeviceStore } from '../../functions/core/ports';
import { inspectCertificate } from '../../functions/core/x509';

/**
 * Cross-system invariants of one device: what the store records, what the registry (AWS IoT) and the CA
 * actually hold, and the audit trail. Used by tests that break the lifecycle on purpose (fault injection,
 * races) and then check that, once retries converged, every system tells the same story.
 */
export interface FleetView {
  store: DeviceStore;
  registry: LocalDeviceRegistry;
  ca: SoftwareCertificateAuthority;
  clock: { now(): Date };
}

/** How many audit events are read per device: far more than any test makes. */
const EVENT_LIMIT = 1000;

/** PEM → (CN, serial), parsed once per certificate. */
const factsCache = new Map<string, Promise<{ commonName?: string; serialNumber: string }>>();

function factsOf(pem: string): Promise<{ commonName?: string; serialNumber: string }> {
  let facts = factsCache.get(pem);
  if (!facts) {
    facts = inspectCertificate(pem).then((f) => ({ commonName: f.commonName, serialNumber: f.serialNumber }));
    factsCache.set(pem, facts);
  }
  return facts;
}

const short = (certificateId: string): string => certificateId.slice(0, 12);

/** Every certificate the registry holds for the device: its subject CN names the device, or it is attached to the device's thing. */
export async function registryCertificatesOf(fleet: FleetView, deviceId: string): Promise<LocalRegistryCertificate[]> {
  const attached = new Set(fleet.registry.findThing(deviceId)?.principals ?? []);
  const result: LocalRegistryCertificate[] = [];
  for (const certificate of fleet.registry.snapshot().certificates) {
    if (attached.has(certificate.certificateId)) {
      result.push(certificate);
      continue;
    }
    const facts = await factsOf(certificate.certificatePem).catch(() => undefined);
    if (facts?.commonName === deviceId) result.push(certificate);
  }
  return result;
}

/** The certificates of the device that can connect right now: ACTIVE in the registry and not revoked at the CA. */
export async function usableCertificateIds(fleet: FleetView, deviceId: string): Promise<string[]> {
  const usable: string[] = [];
  for (const certificate of await registryCertificatesOf(fleet, deviceId)) {
    if (certificate.status !== 'ACTIVE') continue;
    const facts = await factsOf(certificate.certificatePem);
    if (!(await fleet.ca.isRevoked(facts.serialNumber))) usable.push(certificate.certificateId);
  }
  return usable;
}

/** How many certificates of the device can connect right now: ACTIVE in the registry and not revoked at the CA. */
export async function countUsableCertificates(fleet: FleetView, deviceId: string): Promise<number> {
  return (await usableCertificateIds(fleet, deviceId)).length;
}

/** Alias kept for callers that think of it as "issued and active". */
export const countIssuedActive = countUsableCertificates;

/** The device's audit events, oldest first (the store answers newest first, ordered by `at` then event id). */
export async function deviceEvents(fleet: FleetView, deviceId: string): Promise<AuditEvent[]> {
  const view = await fleet.store.getDeviceView(deviceId, EVENT_LIMIT);
  return [...(view?.events ?? [])].reverse();
}

const describeEvent = (event: AuditEvent): string => `${event.type}(${event.fromStatus ?? '∅'}→${event.toStatus ?? '∅'})`;

/**
 * An order of `events` in which each starts where the previous one ended (the first from nothing), never going back
 * in time, and ending at `finalStatus`; undefined when there is none. Events of the same instant may come in any order
 * (stores order them by time, then by event id, which need not follow the order they were written in).
 */
function chainOrder(events: readonly AuditEvent[], finalStatus: string): AuditEvent[] | undefined {
  const search = (current: string | undefined, since: string, remaining: readonly AuditEvent[]): AuditEvent[] | undefined => {
    if (remaining.length === 0) return current === finalStatus ? [] : undefined;
    for (let i = 0; i < remaining.length; i += 1) {
      const event = remaining[i] as AuditEvent;
      if (event.fromStatus !== current || event.at < since || event.toStatus === undefined) continue;
      const rest = search(event.toStatus, event.at, [...remaining.slice(0, i), ...remaining.slice(i + 1)]);
      if (rest) return [event, ...rest];
    }
    return undefined;
  };
  return search(undefined, '', events);
}

/**
 * Checks that `events` (all about one entity) form one chain of transitions ending at `finalStatus`: each event
 * starts where the previous one ended, nothing is left over (a duplicate or a stray event), and the last one ends
 * at the recorded status. Also: one change (idempotency key) never writes the same transition twice.
 */
function chainViolations(label: string, events: readonly AuditEvent[], finalStatus: string): string[] {
  const violations: string[] = [];
  const seen = new Map<string, AuditEvent>();
  for (const event of events) {
    const signature = `${event.idempotencyKey}|${describeEvent(event)}`;
    const first = seen.get(signature);
    if (first) violations.push(`${label}: audit event ${describeEvent(event)} is recorded twice for one change (events ${first.eventId}, ${event.eventId}; key ${event.idempotencyKey})`);
    else seen.set(signature, event);
  }
  const ordered = [...events].sort((a, b) => (a.at === b.at ? 0 : a.at < b.at ? -1 : 1));
  if (!chainOrder(ordered, finalStatus)) {
    violations.push(`${label}: recorded status is ${finalStatus} but the audit trail is not one chain of transitions ending there (missing, duplicated or stray events): ${ordered.map(describeEvent).join(', ') || 'empty'}`);
  }
  return violations;
}

/** Every broken invariant of one device, as human-readable strings; [] when consistent. */
export async function deviceViolations(fleet: FleetView, deviceId: string): Promise<string[]> {
  const violations: string[] = [];
  const now = fleet.clock.now();
  const device: Device | undefined = await fleet.store.getDevice(deviceId);
  const records: CertificateRecord[] = await fleet.store.listDeviceCertificates(deviceId);
  const recordsById = new Map(records.map((record) => [record.certificateId, record]));
  const thing = fleet.registry.findThing(deviceId);
  const attached = new Set(thing?.principals ?? []);
  const inRegistry = await registryCertificatesOf(fleet, deviceId);
  const revokedAtCa = async (pem: string, serial?: string): Promise<boolean> => fleet.ca.isRevoked(serial ?? (await factsOf(pem)).serialNumber);

  /* ------------------------------------------------------------ each certificate record */
  for (const record of records) {
    const label = `certificate ${short(record.certificateId)} (${record.source}, record ${record.status})`;
    const registered = fleet.registry.findCertificate(record.certificateId);
    switch (record.status) {
      case 'ACTIVE':
        if (record.activationLeaseUntil !== undefined || record.activationLeaseHolder !== undefined || record.awaitingPreRegistration !== undefined) {
          violations.push(`${label}: ACTIVE on record but still carries its activation claim (lease until ${record.activationLeaseUntil ?? '-'}, holder ${record.activationLeaseHolder ?? '-'}, awaiting ${String(record.awaitingPreRegistration)})`);
        }
        if (registered?.status !== 'ACTIVE') violations.push(`${label}: registry status is ${registered?.status ?? 'not registered'}, expected ACTIVE`);
        if (!attached.has(record.certificateId)) violations.push(`${label}: not attached to thing ${deviceId}`);
        if (await revokedAtCa(record.certificatePem, record.serialNumber)) violations.push(`${label}: revoked at the CA although ACTIVE on record`);
        break;
      case 'INACTIVE':
        if (registered?.status !== 'INACTIVE') violations.push(`${label}: registry status is ${registered?.status ?? 'not registered'}, expected INACTIVE`);
        break;
      case 'REVOKED':
        if (registered && registered.status !== 'REVOKED') violations.push(`${label}: registry status is ${registered.status}, expected REVOKED`);
        if (!(await revokedAtCa(record.certificatePem, record.serialNumber))) violations.push(`${label}: not revoked at the CA (serial ${record.serialNumber})`);
        break;
      default:
        break;
    }
    if (device?.status === 'REVOKED' && (record.status === 'ACTIVE' || record.status === 'INACTIVE')) {
      violations.push(`${label}: device is REVOKED but the certificate is ${record.status} on record`);
    }
    if (device?.status === 'ACTIVE' && record.status === 'INACTIVE' && Date.parse(record.notAfter) > now.getTime()) {
      violations.push(`${label}: device is ACTIVE but this unexpired certificate is INACTIVE on record`);
    }
  }

  /* ------------------------------------------------------------ each registry certificate of the device */
  for (const registered of inRegistry) {
    const record = recordsById.get(registered.certificateId) ?? (await fleet.store.getCertificate(registered.certificateId));
    const label = `registry certificate ${short(registered.certificateId)} (registry ${registered.status}, record ${record?.status ?? 'missing'})`;
    if (registered.status === 'ACTIVE') {
      if (record?.status !== 'ACTIVE') violations.push(`${label}: ACTIVE in the registry but not ACTIVE on record (an unrecorded usable certificate)`);
      else if (!recordsById.has(registered.certificateId)) violations.push(`${label}: ACTIVE but not linked to device ${deviceId} in the store (record deviceId ${record.deviceId ?? 'none'})`);
      if (device?.status === 'SUSPENDED') violations.push(`${label}: device is SUSPENDED but the certificate is ACTIVE in the registry`);
      if (await revokedAtCa(registered.certificatePem)) violations.push(`${label}: ACTIVE in the registry but revoked at the CA`);
    }
    if (device?.status === 'REVOKED' && (registered.status === 'ACTIVE' || registered.status === 'INACTIVE')) {
      violations.push(`${label}: device is REVOKED but the certificate is ${registered.status} in the registry`);
    }
    if (device === undefined && registered.status === 'ACTIVE') violations.push(`${label}: ACTIVE in the registry for a device the store does not have`);
  }

  /* ------------------------------------------------------------ the audit trail */
  const events = await deviceEvents(fleet, deviceId);
  if (device) {
    const deviceEventsOnly = events.filter((event) => event.certificateId === undefined && event.type.startsWith('DEVICE_'));
    violations.push(...chainViolations(`device ${deviceId} (${device.status})`, deviceEventsOnly, device.status));
  } else if (events.length > 0) {
    violations.push(`device ${deviceId}: no device record, but ${events.length} audit events (${events.map(describeEvent).join(', ')})`);
  }
  if (device) {
    for (const record of records) {
      const label = `certificate ${short(record.certificateId)} (${record.source}, record ${record.status})`;
      violations.push(...chainViolations(label, events.filter((event) => event.certificateId === record.certificateId), record.status));
    }
    const strays = events.filter((event) => event.certificateId !== undefined && !recordsById.has(event.certificateId));
    for (const stray of strays) violations.push(`audit event ${describeEvent(stray)} (${stray.eventId}) names certificate ${short(stray.certificateId as string)} that is not a certificate of ${deviceId}`);
  }
  return violations;
}
