import { createHash, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalDeviceRegistry } from '../../../functions/adapters/local/local-device-registry';
import { RegistryFileError, RegistrySnapshotFile } from '../../../functions/adapters/local/registry-snapshot-file';
import { SoftwareCertificateAuthority } from '../../../functions/adapters/local/software-ca';
import { fleetPolicyDocument } from '../../../functions/policy/fleet-policy';
import { makeCsr } from '../../support/pki';

const GROUP = 'fleet';

async function fixture() {
  const { ca, material } = await SoftwareCertificateAuthority.create('Registry test CA');
  const mint = async (deviceId: string) => ca.mintDeviceCertificate(deviceId, (await makeCsr(deviceId)).csrPem, 30);
  return { ca, caPem: material.certificatePem, mint };
}

describe('LocalDeviceRegistry: CA registration, thing group policies, status listeners', () => {
  test('registers a CA under the SHA-256 of its DER, with auto-registration, idempotently', async () => {
    const { caPem } = await fixture();
    const registry = new LocalDeviceRegistry({ thingGroupName: GROUP });
    const expectedId = createHash('sha256').update(new X509Certificate(caPem).raw).digest('hex');

    const first = await registry.registerCaCertificate(caPem, { autoRegistration: true });
    const again = await registry.registerCaCertificate(caPem, { autoRegistration: true });

    expect(first).toMatchObject({ caCertificateId: expectedId, status: 'ACTIVE', autoRegistrationStatus: 'ENABLE' });
    expect(again.caCertificateId).toBe(expectedId);
    expect(registry.activeCaCertificates().map((ca) => ca.caCertificateId)).toEqual([expectedId]);
    expect(registry.findCaCertificate(expectedId)?.certificatePem).toBe(caPem);
  });

  test('sets a CA INACTIVE with auto-registration off, idempotently, saving the change; an unknown CA is CA_NOT_FOUND', async () => {
    const { caPem } = await fixture();
    const saved: unknown[] = [];
    const registry = new LocalDeviceRegistry({ thingGroupName: GROUP, onChange: async (change) => void saved.push(change) });
    const { caCertificateId } = await registry.registerCaCertificate(caPem, { autoRegistration: true });
    saved.length = 0;

    await registry.setCaCertificateStatus(caCertificateId, 'INACTIVE');
    await registry.setCaCertificateStatus(caCertificateId, 'INACTIVE');

    expect(registry.findCaCertificate(caCertificateId)).toMatchObject({ status: 'INACTIVE', autoRegistrationStatus: 'DISABLE' });
    expect(registry.activeCaCertificates()).toEqual([]);
    expect(saved).toEqual([{ kind: 'caCertificate', value: expect.objectContaining({ caCertificateId, status: 'INACTIVE', autoRegistrationStatus: 'DISABLE' }) }]);
    await expect(registry.setCaCertificateStatus('f'.repeat(64), 'INACTIVE')).rejects.toMatchObject({ code: 'CA_NOT_FOUND' });
  });

  test('applies a policy attached to a thing group to the things in the group only', async () => {
    const registry = new LocalDeviceRegistry({ thingGroupName: GROUP });
    const policy = fleetPolicyDocument({ region: 'local', accountId: '000000000000' });
    await registry.putPolicy('fleet-policy', policy);
    await registry.attachPolicyToThingGroup('fleet-policy', GROUP);
    await registry.attachPolicyToThingGroup('fleet-policy', GROUP);

    await registry.ensureThing('in-group', {});

    expect(registry.policiesOfThing('in-group')).toEqual([policy]);
    expect(registry.policiesOfThing('no-such-thing')).toEqual([]);
    expect(registry.snapshot().thingGroupPolicies).toEqual([{ policyName: 'fleet-policy', thingGroupName: GROUP }]);
  });

  test('rejects attaching a policy that does not exist', async () => {
    const registry = new LocalDeviceRegistry({ thingGroupName: GROUP });

    await expect(registry.attachPolicyToThingGroup('missing', GROUP)).rejects.toThrow('Policy missing does not exist.');
  });

  test('tells listeners of every status change, before the change is saved', async () => {
    const { caPem, mint } = await fixture();
    const order: string[] = [];
    const registry = new LocalDeviceRegistry({ thingGroupName: GROUP, onChange: () => void order.push('saved') });
    const ca = await registry.registerCaCertificate(caPem, { autoRegistration: true });
    const stop = registry.onCertificateStatusChange((certificateId, status) => order.push(`${certificateId.slice(0, 4)}:${status}`));
    const pending = await registry.registerPendingActivation(await mint('d1'), ca.caCertificateId);
    order.length = 0;

    await registry.updateCertificateStatus(pending.certificateId, 'ACTIVE');
    await registry.updateCertificateStatus(pending.certificateId, 'ACTIVE'); // no change, no notice
    await registry.updateCertificateStatus(pending.certificateId, 'REVOKED');
    stop();
    await expect(registry.updateCertificateStatus(pending.certificateId, 'ACTIVE')).rejects.toThrow(/REVOKED in the registry/);

    const id = pending.certificateId.slice(0, 4);
    expect(order).toEqual([`${id}:ACTIVE`, 'saved', `${id}:REVOKED`, 'saved']);
  });

  test('saves again on a retried call after a failed save, so a revocation whose save failed still reaches the disk', async () => {
    // Prepare: a registry whose next save fails once (a full disk, say).
    const { caPem, mint } = await fixture();
    const saved: string[] = [];
    let failNext = false;
    const registry = new LocalDeviceRegistry({
      thingGroupName: GROUP,
      onChange: (change) => {
        if (failNext) {
          failNext = false;
          throw new Error('ENOSPC: no space left on device');
        }
        saved.push(change.kind === 'certificate' ? change.value.status : change.kind);
      },
    });
    const ca = await registry.registerCaCertificate(caPem, { autoRegistration: true });
    const pending = await registry.registerPendingActivation(await mint('d5'), ca.caCertificateId);
    await registry.updateCertificateStatus(pending.certificateId, 'ACTIVE');
    saved.length = 0;
    failNext = true;

    // Act: the revocation's save fails; the caller retries the same call (its status is already REVOKED in memory).
    const first = registry.updateCertificateStatus(pending.certificateId, 'REVOKED');
    await expect(first).rejects.toThrow('ENOSPC');
    const unsavedAfterFailure = registry.unsaved;
    await registry.updateCertificateStatus(pending.certificateId, 'REVOKED');

    // Assess: the retry saved the revocation; nothing is left unsaved, and a further no-op call saves nothing.
    expect(unsavedAfterFailure).toBe(true);
    expect(saved).toEqual(['REVOKED']);
    expect(registry.unsaved).toBe(false);
    await registry.updateCertificateStatus(pending.certificateId, 'REVOKED');
    expect(saved).toEqual(['REVOKED']);
  });

  test('a failed save is made good by the next call of any kind, even one that changes nothing', async () => {
    const { caPem } = await fixture();
    const saves: string[] = [];
    let fail = true;
    const registry = new LocalDeviceRegistry({
      thingGroupName: GROUP,
      onChange: (change) => {
        if (fail) throw new Error('EIO');
        saves.push(change.kind);
      },
    });
    await expect(registry.registerCaCertificate(caPem, { autoRegistration: true })).rejects.toThrow('EIO');
    fail = false;

    await registry.registerCaCertificate(caPem, { autoRegistration: true }); // already registered: a no-op

    expect(saves).toEqual(['caCertificate']);
    expect(registry.unsaved).toBe(false);
  });

  test('links a certificate registered with its CA PEM to that CA when the CA is registered', async () => {
    const { caPem, mint } = await fixture();
    const registry = new LocalDeviceRegistry({ thingGroupName: GROUP });
    const ca = await registry.registerCaCertificate(caPem, { autoRegistration: true });

    const { certificateId } = await registry.registerCertificate({ certificatePem: await mint('d2'), caCertificatePem: caPem });

    expect(registry.findCertificate(certificateId)).toMatchObject({ status: 'ACTIVE', caCertificateId: ca.caCertificateId });
  });
});

describe('RegistrySnapshotFile', () => {
  let dir: string;
  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'registry-'))));
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  test('a registry saved through onChange is the same registry when loaded again', async () => {
    const { caPem, mint } = await fixture();
    const file = new RegistrySnapshotFile(join(dir, 'registry.json'));
    const registry = new LocalDeviceRegistry({ thingGroupName: GROUP, snapshot: await file.load(), onChange: file.save });
    const ca = await registry.registerCaCertificate(caPem, { autoRegistration: true });
    await registry.putPolicy('p', fleetPolicyDocument({ region: 'local', accountId: '000000000000' }));
    await registry.attachPolicyToThingGroup('p', GROUP);
    const pending = await registry.registerPendingActivation(await mint('d3'), ca.caCertificateId);
    await registry.ensureThing('d3', { model: 'x' });
    await registry.attachCertificate('d3', pending.certificateId);
    await registry.updateCertificateStatus(pending.certificateId, 'ACTIVE');
    await file.flush();

    const reloaded = new LocalDeviceRegistry({ thingGroupName: GROUP, snapshot: await new RegistrySnapshotFile(join(dir, 'registry.json')).load() });

    expect(reloaded.snapshot()).toEqual(registry.snapshot());
    expect(reloaded.thingsOfPrincipal(pending.certificateId).map((thing) => thing.thingName)).toEqual(['d3']);
    expect(reloaded.policiesOfThing('d3')).toHaveLength(1);
    expect(JSON.parse(await readFile(join(dir, 'registry.json'), 'utf8')).version).toBe(1);
  });

  test('answers undefined when nothing was saved yet', async () => {
    expect(await new RegistrySnapshotFile(join(dir, 'none.json')).load()).toBeUndefined();
  });

  test.each([
    ['{"version":1,"registry":', 'is not valid JSON'],
    ['{"version":2,"registry":{"certificates":[],"things":[]}}', 'has version 2, expected 1'],
    ['{"version":1,"registry":{}}', 'does not hold a registry'],
  ])('rejects a file it cannot read back: %s', async (content, message) => {
    const path = join(dir, 'registry.json');
    await writeFile(path, content);

    const loading = new RegistrySnapshotFile(path).load();

    await expect(loading).rejects.toThrow(RegistryFileError);
    await expect(new RegistrySnapshotFile(path).load()).rejects.toThrow(message);
  });
});
