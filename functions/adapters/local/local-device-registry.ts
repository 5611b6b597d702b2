import { LifecycleError, NotFoundError, ValidationError } from '../../core/errors';
import type { DeviceRegistry, RegisterCertificateRequest, RegisteredCertificate, RegistryCertificate, RegistryCertificateStatus } from '../../core/ports';
import { certificateIdOf } from '../../core/x509';
import type { IotPolicyDocument } from '../../policy/fleet-policy';

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

/** A CA registered with AWS IoT (RegisterCACertificate): its id is the SHA-256 of its DER, like a device certificate's. */
export interface LocalCaCertificate {
  readonly caCertificateId: string;
  readonly certificatePem: string;
  status: 'ACTIVE' | 'INACTIVE';
  /** `ENABLE`: an unknown certificate it signed is registered PENDING_ACTIVATION on first connect (JITR). */
  autoRegistrationStatus: 'ENABLE' | 'DISABLE';
  readonly createdAt: string;
}

export interface LocalPolicy {
  readonly policyName: string;
  document: IotPolicyDocument;
}

/** An AttachPolicy whose target is a thing group: the policy applies to every thing in the group. */
export interface LocalThingGroupPolicyAttachment {
  readonly policyName: string;
  readonly thingGroupName: string;
}

/** Everything the registry holds, as plain JSON: what the local mode persists between runs. */
export interface LocalRegistrySnapshot {
  readonly certificates: LocalRegistryCertificate[];
  readonly things: LocalThing[];
  readonly caCertificates?: LocalCaCertificate[];
  readonly policies?: LocalPolicy[];
  readonly thingGroupPolicies?: LocalThingGroupPolicyAttachment[];
}

/**
 * One change of the registry: the new value of one record, whole. Applying a change again, or an older one before
 * a newer one of the same record, ends in the same registry: a journal of changes replays idempotently.
 */
export type LocalRegistryChange =
  | { readonly kind: 'certificate'; readonly value: LocalRegistryCertificate }
  | { readonly kind: 'thing'; readonly value: LocalThing }
  | { readonly kind: 'caCertificate'; readonly value: LocalCaCertificate }
  | { readonly kind: 'policy'; readonly value: LocalPolicy }
  | { readonly kind: 'thingGroupPolicy'; readonly value: LocalThingGroupPolicyAttachment };

/** The record a change writes, as a key unique across kinds. */
export function registryChangeKey(change: LocalRegistryChange): string {
  switch (change.kind) {
    case 'certificate':
      return `certificate:${change.value.certificateId}`;
    case 'thing':
      return `thing:${change.value.thingName}`;
    case 'caCertificate':
      return `caCertificate:${change.value.caCertificateId}`;
    case 'policy':
      return `policy:${change.value.policyName}`;
    case 'thingGroupPolicy':
      return `thingGroupPolicy:${change.value.policyName}\u0000${change.value.thingGroupName}`;
  }
}

/** Told of every change of a certificate's status, e.g. so the broker can drop connections of a revoked certificate. */
export type CertificateStatusListener = (certificateId: string, status: RegistryCertificateStatus) => void;

export interface LocalDeviceRegistryOptions {
  /** The fleet's thing group: `ensureThing` adds every thing to it, so the group's policy applies. */
  readonly thingGroupName: string;
  readonly snapshot?: LocalRegistrySnapshot;
  /**
   * Called after every change with that change (one record's new value, not the whole registry: saving it costs
   * the same at any fleet size), so the local mode can persist it. Calls are made in the order of the changes.
   * When one fails, the change stays in memory and its record counts as unsaved: the next call (even one that
   * changes nothing, such as a retry of the failed one) saves that record's current value again, until it succeeds.
   */
  readonly onChange?: (change: LocalRegistryChange) => void | Promise<void>;
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
  private readonly caCertificates = new Map<string, LocalCaCertificate>();
  private readonly policies = new Map<string, LocalPolicy>();
  private readonly thingGroupPolicies: LocalThingGroupPolicyAttachment[] = [];
  private readonly statusListeners = new Set<CertificateStatusListener>();
  private readonly now: () => Date;
  /** The records whose last save failed (by `registryChangeKey`), with how to read their current value. */
  private readonly unsavedRecords = new Map<string, () => LocalRegistryChange>();

  public constructor(private readonly options: LocalDeviceRegistryOptions) {
    this.now = options.now ?? (() => new Date());
    const snapshot = options.snapshot;
    for (const certificate of snapshot?.certificates ?? []) this.certificates.set(certificate.certificateId, { ...certificate });
    for (const thing of snapshot?.things ?? []) this.things.set(thing.thingName, { ...thing, attributes: { ...thing.attributes }, thingGroups: [...thing.thingGroups], principals: [...thing.principals] });
    for (const ca of snapshot?.caCertificates ?? []) this.caCertificates.set(ca.caCertificateId, { ...ca });
    for (const policy of snapshot?.policies ?? []) this.policies.set(policy.policyName, { ...policy });
    for (const attachment of snapshot?.thingGroupPolicies ?? []) this.thingGroupPolicies.push({ ...attachment });
  }

  public snapshot(): LocalRegistrySnapshot {
    return {
      certificates: [...this.certificates.values()].map((c) => ({ ...c })),
      things: [...this.things.values()].map((t) => ({ ...t, attributes: { ...t.attributes }, thingGroups: [...t.thingGroups], principals: [...t.principals] })),
      caCertificates: [...this.caCertificates.values()].map((ca) => ({ ...ca })),
      policies: [...this.policies.values()].map((policy) => ({ ...policy })),
      thingGroupPolicies: this.thingGroupPolicies.map((attachment) => ({ ...attachment })),
    };
  }

  /* ------------------------------------------------------------ CA certificates */

  /**
   * RegisterCACertificate: registers (or updates) a CA as ACTIVE. With `autoRegistration`, an unknown
   * certificate it signed is registered PENDING_ACTIVATION on its first connect.
   */
  public async registerCaCertificate(certificatePem: string, options: { readonly autoRegistration: boolean }): Promise<LocalCaCertificate> {
    const caCertificateId = await certificateIdOf(certificatePem);
    const autoRegistrationStatus = options.autoRegistration ? 'ENABLE' : 'DISABLE';
    const existing = this.caCertificates.get(caCertificateId);
    if (existing && existing.status === 'ACTIVE' && existing.autoRegistrationStatus === autoRegistrationStatus) {
      await this.saveIfUnsaved();
      return { ...existing };
    }
    const record: LocalCaCertificate = existing
      ? Object.assign(existing, { status: 'ACTIVE' as const, autoRegistrationStatus })
      : { caCertificateId, certificatePem, status: 'ACTIVE', autoRegistrationStatus, createdAt: this.now().toISOString() };
    this.caCertificates.set(caCertificateId, record);
    await this.changed(() => ({ kind: 'caCertificate', value: { ...(this.caCertificates.get(caCertificateId) as LocalCaCertificate) } }));
    return { ...record };
  }

  public findCaCertificate(caCertificateId: string): LocalCaCertificate | undefined {
    const ca = this.caCertificates.get(caCertificateId);
    return ca && { ...ca };
  }

  /**
   * UpdateCACertificate to INACTIVE with auto-registration off: the endpoint then refuses every certificate the CA
   * signed (`local/iot-core/certificate-gate.ts`), as AWS IoT does. Setting it again succeeds.
   */
  public async setCaCertificateStatus(caCertificateId: string, status: 'INACTIVE'): Promise<void> {
    const ca = this.caCertificates.get(caCertificateId);
    if (!ca) throw new NotFoundError('CA_NOT_FOUND', `CA ${caCertificateId} is not registered.`, { details: { caCertificateId } });
    // Already so: a retry after a failed save must still get the change on disk.
    if (ca.status === status && ca.autoRegistrationStatus === 'DISABLE') return this.saveIfUnsaved();
    Object.assign(ca, { status, autoRegistrationStatus: 'DISABLE' as const });
    await this.changed(() => ({ kind: 'caCertificate', value: { ...(this.caCertificates.get(caCertificateId) as LocalCaCertificate) } }));
  }

  /** The registered CAs that are ACTIVE: the ones a TLS endpoint trusts for client certificates. */
  public activeCaCertificates(): LocalCaCertificate[] {
    return [...this.caCertificates.values()].filter((ca) => ca.status === 'ACTIVE').map((ca) => ({ ...ca }));
  }

  /* ------------------------------------------------------------------- policies */

  /** CreatePolicy, or a new default version of an existing one. */
  public async putPolicy(policyName: string, document: IotPolicyDocument): Promise<void> {
    const existing = this.policies.get(policyName);
    if (existing && JSON.stringify(existing.document) === JSON.stringify(document)) return this.saveIfUnsaved();
    this.policies.set(policyName, { policyName, document });
    await this.changed(() => ({ kind: 'policy', value: { ...(this.policies.get(policyName) as LocalPolicy) } }));
  }

  /** AttachPolicy with a thing group as the target. */
  public async attachPolicyToThingGroup(policyName: string, thingGroupName: string): Promise<void> {
    if (!this.policies.has(policyName)) throw new ValidationError('INVALID_REQUEST', `Policy ${policyName} does not exist.`);
    if (this.thingGroupPolicies.some((a) => a.policyName === policyName && a.thingGroupName === thingGroupName)) return this.saveIfUnsaved();
    this.thingGroupPolicies.push({ policyName, thingGroupName });
    await this.changed(() => ({ kind: 'thingGroupPolicy', value: { policyName, thingGroupName } }));
  }

  /** The policies that apply to a thing through its thing groups (what AWS IoT evaluates for a connection associated with it). */
  public policiesOfThing(thingName: string): IotPolicyDocument[] {
    const thing = this.things.get(thingName);
    if (!thing) return [];
    const names = new Set(this.thingGroupPolicies.filter((a) => thing.thingGroups.includes(a.thingGroupName)).map((a) => a.policyName));
    return [...names].flatMap((name) => this.policies.get(name)?.document ?? []);
  }

  /* ------------------------------------------------------------ status listeners */

  /** Registers a listener for certificate status changes; answers a function that removes it. */
  public onCertificateStatusChange(listener: CertificateStatusListener): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  /* ------------------------------------------------------------------- registry */

  /** What AWS IoT does on a first connect with an unknown certificate from a CA registered for auto-registration. */
  public async registerPendingActivation(certificatePem: string, caCertificateId: string): Promise<LocalRegistryCertificate> {
    const certificateId = await certificateIdOf(certificatePem);
    const existing = this.certificates.get(certificateId);
    if (existing) {
      await this.saveIfUnsaved();
      return existing;
    }
    const record: LocalRegistryCertificate = { certificateId, certificatePem, status: 'PENDING_ACTIVATION', caCertificateId, createdAt: this.now().toISOString() };
    this.certificates.set(certificateId, record);
    await this.changed(this.certificateChange(certificateId));
    this.notifyStatus(certificateId, record.status);
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

  public async registerCertificate(request: RegisterCertificateRequest): Promise<RegisteredCertificate> {
    const certificateId = await certificateIdOf(request.certificatePem);
    const alreadyRegistered = this.certificates.has(certificateId);
    if (!alreadyRegistered) {
      // Like RegisterCertificate with the CA's PEM: linked to the CA when that CA is registered.
      const caCertificateId = await certificateIdOf(request.caCertificatePem).catch(() => undefined);
      const linked = caCertificateId !== undefined && this.caCertificates.has(caCertificateId) ? { caCertificateId } : {};
      this.certificates.set(certificateId, { certificateId, certificatePem: request.certificatePem, status: 'ACTIVE', ...linked, createdAt: this.now().toISOString() });
      await this.changed(this.certificateChange(certificateId));
      this.notifyStatus(certificateId, 'ACTIVE');
    } else {
      await this.saveIfUnsaved();
    }
    return { certificateId, alreadyRegistered };
  }

  public async updateCertificateStatus(certificateId: string, status: 'ACTIVE' | 'INACTIVE' | 'REVOKED'): Promise<void> {
    const certificate = this.certificates.get(certificateId);
    if (!certificate) throw new NotFoundError('CERTIFICATE_NOT_FOUND', `Certificate ${certificateId} is not registered.`);
    // Already so: a retry after a failed save must still get the change on disk.
    if (certificate.status === status) return this.saveIfUnsaved();
    if (certificate.status === 'REVOKED') {
      throw new LifecycleError('INVALID_TRANSITION', `Certificate ${certificateId} is REVOKED in the registry and cannot become ${status}.`);
    }
    certificate.status = status;
    // Listeners hear of it at once (a revoked certificate must not keep its connections while the change is saved).
    this.notifyStatus(certificateId, status);
    await this.changed(this.certificateChange(certificateId));
  }

  public async ensureThing(thingName: string, attributes: Readonly<Record<string, string>>): Promise<void> {
    const thing = this.things.get(thingName);
    if (thing) {
      // Nothing changed: no rewrite of the snapshot (only what an earlier failed save left behind is saved).
      if (thing.thingGroups.includes(this.options.thingGroupName)) return this.saveIfUnsaved();
      thing.thingGroups.push(this.options.thingGroupName);
      return this.changed(this.thingChange(thingName));
    }
    this.things.set(thingName, { thingName, attributes: { ...attributes }, thingGroups: [this.options.thingGroupName], principals: [] });
    await this.changed(this.thingChange(thingName));
  }

  public async attachCertificate(thingName: string, certificateId: string): Promise<void> {
    const thing = this.things.get(thingName);
    if (!thing) throw new NotFoundError('DEVICE_NOT_FOUND', `Thing ${thingName} does not exist.`);
    if (!this.certificates.has(certificateId)) throw new NotFoundError('CERTIFICATE_NOT_FOUND', `Certificate ${certificateId} is not registered.`);
    if (!thing.principals.includes(certificateId)) {
      thing.principals.push(certificateId);
      await this.changed(this.thingChange(thingName));
    } else {
      await this.saveIfUnsaved();
    }
  }

  public async detachCertificate(thingName: string, certificateId: string): Promise<void> {
    const thing = this.things.get(thingName);
    const index = thing?.principals.indexOf(certificateId) ?? -1;
    if (thing && index >= 0) {
      thing.principals.splice(index, 1);
      await this.changed(this.thingChange(thingName));
    } else {
      await this.saveIfUnsaved();
    }
  }

  /** True while a change is known not to be saved (its save failed, and no later save of its record succeeded). */
  public get unsaved(): boolean {
    return this.unsavedRecords.size > 0;
  }

  /**
   * Saves one record as it is now (`current` reads it). A record's current value holds every change made to it
   * before, so a successful save covers them all, including those whose own save failed.
   */
  private async changed(current: () => LocalRegistryChange): Promise<void> {
    const change = current();
    const key = registryChangeKey(change);
    try {
      await this.options.onChange?.(change);
    } catch (error) {
      this.unsavedRecords.set(key, current);
      throw error;
    }
    this.unsavedRecords.delete(key);
  }

  /** A call that changes nothing still saves when an earlier save failed, so a retried call gets its change on disk. */
  private async saveIfUnsaved(): Promise<void> {
    for (const current of [...this.unsavedRecords.values()]) await this.changed(current);
  }

  private certificateChange(certificateId: string): () => LocalRegistryChange {
    return () => ({ kind: 'certificate', value: { ...(this.certificates.get(certificateId) as LocalRegistryCertificate) } });
  }

  private thingChange(thingName: string): () => LocalRegistryChange {
    return () => {
      const thing = this.things.get(thingName) as LocalThing;
      return { kind: 'thing', value: { ...thing, attributes: { ...thing.attributes }, thingGroups: [...thing.thingGroups], principals: [...thing.principals] } };
    };
  }

  private notifyStatus(certificateId: string, status: RegistryCertificateStatus): void {
    for (const listener of this.statusListeners) {
      try {
        listener(certificateId, status);
      } catch {
        // A listener's failure must not undo or block a registry change.
      }
    }
  }
}
