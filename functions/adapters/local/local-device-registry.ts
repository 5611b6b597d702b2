import { LifecycleError, NotFoundError } from '../../core/errors';
import type { DeviceRegistry, RegisterCertificateRequest, RegistryCertificate, RegistryCertificateStatus } from '../../core/ports';
import { certificateIdOf } from '../../core/x509';

export interface LocalRegistryCertificate {
  readonly certificateId: string;
  readonly certificatePem: string;
  status: RegistryCertificateStatus;
  readonly caCertificateId?: string;
  readonly createdAt: string;
}

export interface LocalThing {
  readonly thingName: string;
  attributes: Record<string, string>;
  readonly thingGroups: string[];
  readonly principals: string[];
}

/** Everything the registry holds, as plain JSON: what the local mode persists between runs. */
export interface LocalRegistrySnapshot {
  readonly certificates: LocalRegistryCertificate[];
  readonly things: LocalThing[];
}

export interface LocalDeviceRegistryOptions {
  /** The fleet's thing group: `ensureThing` adds every thing to it, so the group's policy applies. */
  readonly thingGroupName: string;
  readonly snapshot?: LocalRegistrySnapshot;
  /** Called after every change with the new snapshot, so the local mode can persist it. */
  readonly onChange?: (snapshot: LocalRegistrySnapshot) => void | Promise<void>;
  readonly now?: () => Date;
}

/**
 * AWS IoT's registry as the local mode needs it: certificates with their status,
 * things, thing groups and principal links. Behaves like AWS IoT where the
 * lifecycle relies on it (a REVOKED certificate cannot be set ACTIVE again).
 */
export class LocalDeviceRegistry implements DeviceRegistry {
  private readonly certificates = new Map<string, LocalRegistryCertificate>();
  private readonly things = new Map<string, LocalThing>();
  private readonly now: () => Date;

  public constructor(private readonly options: LocalDeviceRegistryOptions) {
    this.now = options.now ?? (() => new Date());
    for (const certificate of options.snapshot?.certificates ?? []) this.certificates.set(certificate.certificateId, { ...certificate });
    for (const thing of options.snapshot?.things ?? []) this.things.set(thing.thingName, { ...thing, thingGroups: [...thing.thingGroups], principals: [...thing.principals] });
  }

  public snapshot(): LocalRegistrySnapshot {
    return { certificates: [...this.certificates.values()].map((c) => ({ ...c })), things: [...this.things.values()].map((t) => ({ ...t, thingGroups: [...t.thingGroups], principals: [...t.principals] })) };
  }

  /** What AWS IoT does on a first connect with an unknown certificate from a CA registered for auto-registration. */
  public async registerPendingActivation(certificatePem: string, caCertificateId: string): Promise<LocalRegistryCertificate> {
    const certificateId = await certificateIdOf(certificatePem);
    const existing = this.certificates.get(certificateId);
    if (existing) return existing;
    const record: LocalRegistryCertificate = { certificateId, certificatePem, status: 'PENDING_ACTIVATION', caCertificateId, createdAt: this.now().toISOString() };
    this.certificates.set(certificateId, record);
    await this.changed();
    return record;
  }

  public findCertificate(certificateId: string): LocalRegistryCertificate | undefined {
    return this.certificates.get(certificateId);
  }

  public findThing(thingName: string): LocalThing | undefined {
    return this.things.get(thingName);
  }

  /** The things a certificate is attached to (AWS IoT: ListPrincipalThings). */
  public thingsOfPrincipal(certificateId: string): LocalThing[] {
    return [...this.things.values()].filter((thing) => thing.principals.includes(certificateId));
  }

  public async describeCertificate(certificateId: string): Promise<RegistryCertificate> {
    const certificate = this.certificates.get(certificateId);
    if (!certificate) throw new NotFoundError('CERTIFICATE_NOT_FOUND', `Certificate ${certificateId} is not registered.`);
    return { ...certificate };
  }

  public async registerCertificate(request: RegisterCertificateRequest): Promise<{ certificateId: string }> {
    const certificateId = await certificateIdOf(request.certificatePem);
    if (!this.certificates.has(certificateId)) {
      this.certificates.set(certificateId, { certificateId, certificatePem: request.certificatePem, status: 'ACTIVE', createdAt: this.now().toISOString() });
      await this.changed();
    }
    return { certificateId };
  }

  public async updateCertificateStatus(certificateId: string, status: 'ACTIVE' | 'INACTIVE' | 'REVOKED'): Promise<void> {
    const certificate = this.certificates.get(certificateId);
    if (!certificate) throw new NotFoundError('CERTIFICATE_NOT_FOUND', `Certificate ${certificateId} is not registered.`);
    if (certificate.status === status) return;
    if (certificate.status === 'REVOKED') {
      throw new LifecycleError('INVALID_TRANSITION', `Certificate ${certificateId} is REVOKED in the registry and cannot become ${status}.`);
    }
    certificate.status = status;
    await this.changed();
  }

  public async ensureThing(thingName: string, attributes: Readonly<Record<string, string>>): Promise<void> {
    const thing = this.things.get(thingName);
    if (thing) {
      if (!thing.thingGroups.includes(this.options.thingGroupName)) thing.thingGroups.push(this.options.thingGroupName);
      return this.changed();
    }
    this.things.set(thingName, { thingName, attributes: { ...attributes }, thingGroups: [this.options.thingGroupName], principals: [] });
    await this.changed();
  }

  public async attachCertificate(thingName: string, certificateId: string): Promise<void> {
    const thing = this.things.get(thingName);
    if (!thing) throw new NotFoundError('DEVICE_NOT_FOUND', `Thing ${thingName} does not exist.`);
    if (!this.certificates.has(certificateId)) throw new NotFoundError('CERTIFICATE_NOT_FOUND', `Certificate ${certificateId} is not registered.`);
    if (!thing.principals.includes(certificateId)) {
      thing.principals.push(certificateId);
      await this.changed();
    }
  }

  public async detachCertificate(thingName: string, certificateId: string): Promise<void> {
    const thing = this.things.get(thingName);
    const index = thing?.principals.indexOf(certificateId) ?? -1;
    if (thing && index >= 0) {
      thing.principals.splice(index, 1);
      await this.changed();
    }
  }

  private async changed(): Promise<void> {
    await this.options.onChange?.(this.snapshot());
  }
}
