import { DeviceLifecycle, type LifecycleSettings, type RegistrationEvent } from '../../functions/core/lifecycle';
import type { DeviceStore } from '../../functions/core/ports';
import { LocalDeviceRegistry } from '../../functions/adapters/local/local-device-registry';
import { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import { certificateIdOf } from '../../functions/core/x509';
import { InMemoryDeviceStore } from './in-memory-store';
import { makeCsr } from './pki';

export class TestClock {
  public constructor(public current: Date = new Date()) {}
  public now = (): Date => this.current;
  public advance(ms: number): void {
    this.current = new Date(this.current.getTime() + ms);
  }
}

export interface LifecycleFixture<S extends DeviceStore> {
  readonly lifecycle: DeviceLifecycle;
  readonly store: S;
  readonly registry: LocalDeviceRegistry;
  readonly ca: SoftwareCertificateAuthority;
  readonly caCertificatePem: string;
  readonly clock: TestClock;
  /** What a factory does: a certificate signed by our CA for `deviceId`, unknown to the registry. */
  mintCertificate(deviceId: string, validityDays?: number): Promise<string>;
  /** What AWS IoT does on a device's first connect: registers it PENDING_ACTIVATION and publishes this event. */
  firstConnect(certificatePem: string): Promise<RegistrationEvent>;
}

export async function createLifecycleFixture<S extends DeviceStore = InMemoryDeviceStore>(
  settings: Partial<LifecycleSettings> = {},
  store?: S,
): Promise<LifecycleFixture<S>> {
  const clock = new TestClock();
  const { ca, material } = await SoftwareCertificateAuthority.create('Fleet Test CA', { now: clock.now });
  const registry = new LocalDeviceRegistry({ thingGroupName: 'fleet', now: clock.now });
  const resolvedStore = (store ?? new InMemoryDeviceStore()) as S;
  let counter = 0;
  const lifecycle = new DeviceLifecycle({ store: resolvedStore, registry, ca, clock, ids: { next: () => `event-${(counter += 1).toString().padStart(6, '0')}` } }, settings);
  const caCertificateId = await certificateIdOf(material.certificatePem);
  return {
    lifecycle,
    store: resolvedStore,
    registry,
    ca,
    caCertificatePem: material.certificatePem,
    clock,
    mintCertificate: async (deviceId, validityDays = 365) => ca.mintDeviceCertificate(deviceId, (await makeCsr(deviceId)).csrPem, validityDays),
    firstConnect: async (certificatePem) => {
      const registered = await registry.registerPendingActivation(certificatePem, caCertificateId);
      return {
        certificateId: registered.certificateId,
        caCertificateId,
        timestamp: clock.now().getTime(),
        certificateStatus: 'PENDING_ACTIVATION',
        awsAccountId: '000000000000',
        certificateRegistrationTimestamp: String(clock.now().getTime()),
      };
    },
  };
}
