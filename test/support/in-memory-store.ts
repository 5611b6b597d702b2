import { ConflictError } from '../../functions/core/errors';
import type { AuditEvent, CertificateRecord, Device, DeviceView, Page } from '../../functions/core/model';
import type { CommitOutcome, DeviceStore, ExpiringCertificatesQuery, ListDevicesQuery, RecordedChange, StoreChange } from '../../functions/core/ports';
import { isLiveCertificateStatus } from '../../functions/core/state-machines';

/**
 * The device store contract in memory, for fast core tests. The DynamoDB store is
 * held to the same contract by the integration tests against DynamoDB Local.
 */
export class InMemoryDeviceStore implements DeviceStore {
  public readonly devices = new Map<string, Device>();
  public readonly certificates = new Map<string, CertificateRecord>();
  public readonly events: AuditEvent[] = [];
  private readonly changes = new Map<string, RecordedChange>();

  public async getDevice(deviceId: string) {
    return this.devices.get(deviceId);
  }
  public async getDeviceView(deviceId: string, eventLimit: number): Promise<DeviceView | undefined> {
    const device = this.devices.get(deviceId);
    if (!device) return undefined;
    const events = this.events.filter((event) => event.deviceId === deviceId).sort((a, b) => b.at.localeCompare(a.at)).slice(0, eventLimit);
    return { device, certificates: await this.getCertificates(device.certificateIds), events };
  }
  public async getCertificate(certificateId: string) {
    return this.certificates.get(certificateId);
  }
  public async getCertificates(ids: readonly string[]) {
    return ids.flatMap((id) => this.certificates.get(id) ?? []);
  }
  public async listDevices(query: ListDevicesQuery): Promise<Page<Device>> {
    const all = [...this.devices.values()].filter((d) => d.status === query.status).sort((a, b) => a.deviceId.localeCompare(b.deviceId));
    const start = query.nextToken ? Number(query.nextToken) : 0;
    const items = all.slice(start, start + query.limit);
    return { items, ...(start + query.limit < all.length ? { nextToken: String(start + query.limit) } : {}) };
  }
  public async findCertificatesExpiring(query: ExpiringCertificatesQuery): Promise<Page<CertificateRecord>> {
    const items = [...this.certificates.values()]
      .filter((c) => isLiveCertificateStatus(c.status) && c.notAfter >= query.notBefore.toISOString() && c.notAfter < query.before.toISOString())
      .sort((a, b) => a.notAfter.localeCompare(b.notAfter))
      .slice(0, query.limit);
    return { items };
  }
  public async getChange(idempotencyKey: string) {
    return this.changes.get(idempotencyKey);
  }
  public async commit(change: StoreChange): Promise<CommitOutcome> {
    if (this.changes.has(change.idempotencyKey)) return 'DUPLICATE';
    const check = (current: { version: number } | undefined, expected: number | undefined, what: string) => {
      if (expected === undefined ? current !== undefined : current?.version !== expected) throw new ConflictError(`${what} changed`);
    };
    if (change.device) check(this.devices.get(change.device.next.deviceId), change.device.expectedVersion, 'device');
    for (const c of change.certificates ?? []) check(this.certificates.get(c.next.certificateId), c.expectedVersion, 'certificate');
    this.changes.set(change.idempotencyKey, { idempotencyKey: change.idempotencyKey, committedAt: new Date().toISOString(), ...(change.outcome ? { outcome: change.outcome } : {}) });
    if (change.device) this.devices.set(change.device.next.deviceId, change.device.next);
    for (const c of change.certificates ?? []) this.certificates.set(c.next.certificateId, c.next);
    this.events.push(...change.events);
    return 'APPLIED';
  }
}
