import { ConflictError, ValidationError } from '../../functions/core/errors';
import { DEVICE_STATUSES, type AuditEvent, type CertificateRecord, type Device, type DeviceView, type OperationRecord, type Page } from '../../functions/core/model';
import type { DeviceStore, ExpiringCertificatesQuery, ListDevicesQuery, RotationsDueQuery, StoreChange } from '../../functions/core/ports';
import { isLiveCertificateStatus } from '../../functions/core/state-machines';

/**
 * The device store contract in memory, for fast core tests. The DynamoDB store is
 * held to the same contract by the integration tests against DynamoDB Local.
 */
export class InMemoryDeviceStore implements DeviceStore {
  public readonly devices = new Map<string, Device>();
  public readonly certificates = new Map<string, CertificateRecord>();
  public readonly events: AuditEvent[] = [];
  public readonly operations = new Map<string, OperationRecord>();

  public async getDevice(deviceId: string) {
    return this.devices.get(deviceId);
  }
  public async getDeviceView(deviceId: string, eventLimit: number): Promise<DeviceView | undefined> {
    const device = this.devices.get(deviceId);
    if (!device) return undefined;
    const events = this.events.filter((event) => event.deviceId === deviceId).sort((a, b) => b.at.localeCompare(a.at)).slice(0, eventLimit);
    return { device, certificates: await this.listDeviceCertificates(deviceId), events };
  }
  public async getCertificate(certificateId: string) {
    return this.certificates.get(certificateId);
  }
  public async getDeviceAndCertificate(deviceId: string, certificateId: string) {
    const device = this.devices.get(deviceId);
    const certificate = this.certificates.get(certificateId);
    return { ...(device ? { device } : {}), ...(certificate ? { certificate } : {}) };
  }
  public async listDeviceCertificates(deviceId: string) {
    return [...this.certificates.values()].filter((c) => c.deviceId === deviceId).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }
  public async listDevices(query: ListDevicesQuery): Promise<Page<Device>> {
    // As the DynamoDB store orders them: by device id (code units) within a state; without a status, state by state in DEVICE_STATUSES order.
    const byId = (a: Device, b: Device) => (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0);
    const all = [...this.devices.values()]
      .filter((d) => query.status === undefined || d.status === query.status)
      .sort((a, b) => DEVICE_STATUSES.indexOf(a.status) - DEVICE_STATUSES.indexOf(b.status) || byId(a, b));
    const scope = query.status ?? 'all';
    let start = 0;
    if (query.nextToken !== undefined) {
      const [tokenScope, offset] = query.nextToken.split(':');
      start = Number(offset);
      if (tokenScope !== scope || !Number.isInteger(start) || start < 0) {
        throw new ValidationError('INVALID_REQUEST', 'nextToken is not valid for this query: pass the token from the previous page of the same query.');
      }
    }
    const items = all.slice(start, start + query.limit);
    return { items, ...(start + query.limit < all.length ? { nextToken: `${scope}:${start + query.limit}` } : {}) };
  }
  /** Paged as the DynamoDB store pages: the token is the key of the last item answered (notAfter, certificateId), scoped to the window. */
  public async findCertificatesExpiring(query: ExpiringCertificatesQuery): Promise<Page<CertificateRecord>> {
    const scope = `expiry:${query.notBefore.toISOString()}:${query.before.toISOString()}`;
    const keyOf = (c: CertificateRecord) => `${c.notAfter}#${c.certificateId}`;
    let after = '';
    if (query.nextToken !== undefined) {
      const [tokenScope, key] = query.nextToken.split('|');
      if (tokenScope !== scope || key === undefined) throw new ValidationError('INVALID_REQUEST', 'nextToken is not valid for this query: pass the token from the previous page of the same query.');
      after = key;
    }
    const all = [...this.certificates.values()]
      .filter((c) => isLiveCertificateStatus(c.status) && c.notAfter >= query.notBefore.toISOString() && c.notAfter < query.before.toISOString() && keyOf(c) > after)
      .sort((a, b) => keyOf(a).localeCompare(keyOf(b)));
    const items = all.slice(0, query.limit);
    const last = items.at(-1);
    return { items, ...(all.length > query.limit && last ? { nextToken: `${scope}|${keyOf(last)}` } : {}) };
  }
  public async findRotationsDue(query: RotationsDueQuery): Promise<Page<Device>> {
    const items = [...this.devices.values()]
      .filter((d) => d.rotation !== undefined && d.rotation.commitDeadline <= query.before.toISOString())
      .sort((a, b) => (a.rotation?.commitDeadline ?? '').localeCompare(b.rotation?.commitDeadline ?? ''))
      .slice(0, query.limit);
    return { items };
  }
  public async getOperation(operationId: string) {
    return this.operations.get(operationId);
  }
  public async createOperation(record: OperationRecord): Promise<OperationRecord | undefined> {
    const existing = this.operations.get(record.operationId);
    if (existing) return existing;
    this.operations.set(record.operationId, record);
    return undefined;
  }
  public async commit(change: StoreChange): Promise<void> {
    const check = (current: { version: number } | undefined, expected: number | undefined, what: string) => {
      if (expected === undefined ? current !== undefined : current?.version !== expected) throw new ConflictError(`${what} changed`);
    };
    if (change.operation) check(this.operations.get(change.operation.next.operationId), change.operation.expectedVersion, 'operation');
    if (change.device) check(this.devices.get(change.device.next.deviceId), change.device.expectedVersion, 'device');
    if (change.deviceUnchanged) check(this.devices.get(change.deviceUnchanged.deviceId), change.deviceUnchanged.version, 'device');
    for (const c of change.certificates ?? []) check(this.certificates.get(c.next.certificateId), c.expectedVersion, 'certificate');
    if (change.operation) this.operations.set(change.operation.next.operationId, change.operation.next);
    if (change.device) this.devices.set(change.device.next.deviceId, change.device.next);
    for (const c of change.certificates ?? []) this.certificates.set(c.next.certificateId, c.next);
    this.events.push(...change.events);
  }
}
