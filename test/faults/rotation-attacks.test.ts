/**
 * Attacks on certificate rotation over MQTT (docs/rotation.md): faults at every port call with retries, races between
 * rotation and the other lifecycle changes, hostile device messages, and the invariants that must hold afterwards.
 * In memory only (one CA and one registry for the file, one store and one clock per case), so it stays fast.
 *
 * Tests named `DEFECT: ...` fail on purpose: each shows a defect that is described in /tmp/rotation-review.md.
 * Every other test shows a property that holds.
 */
import { EventEmitter } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Logger } from '@aws-lambda-powertools/logger';
import { DeviceLifecycle, type LifecycleSettings } from '../../functions/core/lifecycle';
import { LifecycleError, UpstreamError } from '../../functions/core/errors';
import type { CertificateAuthority, DeviceRegistry, DeviceStore } from '../../functions/core/ports';
import type { AuditEvent } from '../../functions/core/model';
import { operationIdOf } from '../../functions/core/operations';
import { certificateIdOf, inspectCertificate } from '../../functions/core/x509';
import { createRotationHandler } from '../../functions/handlers/rotation';
import { ruleMessageOf } from '../../functions/handlers/mqtt/rotation-protocol';
import type { LocalDeviceRegistry } from '../../functions/adapters/local/local-device-registry';
import type { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import { createLifecycleFixture, TestClock } from '../support/lifecycle-fixture';
import { InMemoryDeviceStore } from '../support/in-memory-store';
import { deviceViolations, usableCertificateIds, type FleetView } from '../support/invariants';
import { makeCsr, privateKeyPem } from '../support/pki';
import { rotateDevice } from '../../local/cli/rotate';
import type { DeviceTls, MqttTarget } from '../../local/cli/device';
import { inBatches } from '../support/in-batches';

/** The device CLI's MQTT connect, replaced by an in-memory broker (section 6); everything else of local/cli/device.ts is real. */
let mockConnect: ((target: MqttTarget, clientId: string, tls: DeviceTls) => Promise<unknown>) | undefined;
jest.mock('../../local/cli/device', () => ({
  ...jest.requireActual('../../local/cli/device'),
  connectOnce: (target: MqttTarget, clientId: string, tls: DeviceTls) => {
    if (!mockConnect) throw new Error('no broker');
    return mockConnect(target, clientId, tls);
  },
}));

const ACTOR = 'arn:aws:iam::123456789012:user/rotation-attacker';
const COMMIT_SECONDS = 3600;
const SETTINGS: Partial<LifecycleSettings> = { rotationCommitSeconds: COMMIT_SECONDS };
const TRANSIENT = new Set(['UPSTREAM_THROTTLED', 'UPSTREAM_FAILURE', 'CONFLICT', 'REQUEST_IN_PROGRESS', 'SWEEP_FAILED']);
const quiet = new Logger({ serviceName: 'rotation-attacks', logLevel: 'SILENT' });

/* ------------------------------------------------------------------------------------------------------------------
 * Ports that fail on purpose (as in fault-injection.test.ts), or that let other work run in between (races).
 * ---------------------------------------------------------------------------------------------------------------- */

type Mode = 'throw' | 'throttle' | 'ambiguous';
/** `throttle` takes the same paths as `throw` in the core (both UpstreamErrors, both retried by the function): left out for time. */
const MODES: readonly Mode[] = ['throw', 'ambiguous'];

/** Every (k, mode) for calls 1..n. */
const faultsFor = (n: number): { k: number; mode: Mode }[] => MODES.flatMap((mode) => Array.from({ length: n }, (_, i) => ({ k: i + 1, mode })));

class FaultPlan {
  public calls = 0;
  public faultAt = Number.POSITIVE_INFINITY;
  public mode: Mode = 'throw';
  public injected: string | undefined;
  public readonly log: string[] = [];
  /** Every certificate the CA handed out (collected) through these ports. */
  public readonly issuedPems: string[] = [];
  /** Seeded scheduler noise: how many macrotask turns each call waits first (0 = none). */
  public jitter: (() => number) | undefined;
  /** Called before a port call is made; may hold it (a gate). */
  public before: ((label: string, args: unknown[]) => Promise<void> | void) | undefined;

  public arm(k: number, mode: Mode): void {
    this.calls = 0;
    this.log.length = 0;
    this.faultAt = k;
    this.mode = mode;
    this.injected = undefined;
  }

  public disarm(): void {
    this.faultAt = Number.POSITIVE_INFINITY;
  }
}

const turns = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i += 1) await new Promise<void>((resolve) => setImmediate(resolve));
};

function faulty<T extends object>(target: T, portName: string, plan: FaultPlan): T {
  return new Proxy(target, {
    get(object, property) {
      const value: unknown = Reflect.get(object, property, object);
      if (typeof value !== 'function' || typeof property === 'symbol') return value;
      const method = value as (...args: unknown[]) => unknown;
      return async (...args: unknown[]): Promise<unknown> => {
        const label = `${portName}.${property}`;
        if (plan.jitter) await turns(plan.jitter());
        if (plan.before) await plan.before(label, args);
        plan.calls += 1;
        plan.log.push(label);
        const capture = (result: unknown): unknown => {
          if (portName === 'ca' && property === 'collectCertificate') plan.issuedPems.push((result as { certificatePem: string }).certificatePem);
          return result;
        };
        if (plan.calls !== plan.faultAt) return capture(await method.apply(object, args));
        plan.injected = `#${plan.calls} ${label}`;
        if (plan.mode === 'throw') throw new UpstreamError('UPSTREAM_FAILURE', `injected: ${label} failed before it was made`, false);
        if (plan.mode === 'throttle') throw new UpstreamError('UPSTREAM_THROTTLED', `injected: ${label} throttled`, true);
        try {
          capture(await method.apply(object, args));
        } catch {
          // made, and failed: the answer is lost all the same
        }
        throw new UpstreamError('UPSTREAM_FAILURE', `injected: ${label} was made but its answer was lost`, true);
      };
    },
  });
}

/** A seeded PRNG (mulberry32), so a failing interleaving can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/* ------------------------------------------------------------------------------------------------------------------
 * One case: a device, its own store and clock, over the file's CA and registry.
 * ---------------------------------------------------------------------------------------------------------------- */

interface Shared {
  readonly registry: LocalDeviceRegistry;
  readonly ca: SoftwareCertificateAuthority;
  readonly caCertificatePem: string;
  readonly base: Date;
}

let shared: Shared;
let caseCounter = 0;

beforeAll(async () => {
  const fixture = await createLifecycleFixture(SETTINGS);
  shared = { registry: fixture.registry, ca: fixture.ca, caCertificatePem: fixture.caCertificatePem, base: fixture.clock.now() };
});

type Answer<T = unknown> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly code: string; readonly message: string; readonly details?: Record<string, unknown> };

async function attempt<T>(run: () => Promise<T>): Promise<Answer<T>> {
  try {
    return { ok: true, value: await run() };
  } catch (error) {
    if (error instanceof LifecycleError) return { ok: false, code: error.code, message: error.message, details: error.details };
    return { ok: false, code: 'NOT_A_LIFECYCLE_ERROR', message: String(error) };
  }
}

const describeAnswer = (a: Answer): string => (a.ok ? `ok ${JSON.stringify(a.value).slice(0, 120)}` : `${a.code}: ${a.message}`);

class Case {
  public readonly deviceId: string;
  public readonly store = new InMemoryDeviceStore();
  public readonly clock: TestClock;
  /** Ports of `lifecycle`: faults and noise are armed here. */
  public readonly plan = new FaultPlan();
  /** The lifecycle under attack. */
  public readonly lifecycle: DeviceLifecycle;
  /** A fault-free lifecycle over the same systems: the set-up, the operator, the "other" request. */
  public readonly clean: DeviceLifecycle;
  public readonly fleet: FleetView;
  private counter = 0;

  public constructor(name: string, settings: Partial<LifecycleSettings> = SETTINGS) {
    caseCounter += 1;
    this.deviceId = `${name}-${caseCounter}`.slice(0, 60);
    this.clock = new TestClock(new Date(shared.base.getTime()));
    const ids = { next: () => `${this.deviceId}-${(this.counter += 1).toString().padStart(6, '0')}` };
    this.lifecycle = new DeviceLifecycle(
      { store: faulty<DeviceStore>(this.store, 'store', this.plan), registry: faulty<DeviceRegistry>(shared.registry, 'registry', this.plan), ca: faulty<CertificateAuthority>(shared.ca, 'ca', this.plan), clock: this.clock, ids },
      settings,
    );
    this.clean = new DeviceLifecycle({ store: this.store, registry: shared.registry, ca: shared.ca, clock: this.clock, ids }, settings);
    // The shared checker reads audit chains per certificate and does not know the status-less ROTATION_* events: they
    // are checked apart (rotationEventViolations) and hidden from it.
    const store = this.store;
    const view = new Proxy(store, {
      get(object, property) {
        if (property !== 'getDeviceView') return Reflect.get(object, property, object);
        return async (deviceId: string, limit: number) => {
          const v = await object.getDeviceView(deviceId, limit);
          return v && { ...v, events: v.events.filter((e) => !e.type.startsWith('ROTATION_')) };
        };
      },
    });
    this.fleet = { store: view, registry: shared.registry, ca: shared.ca, clock: this.clock };
  }

  /** Another lifecycle over the same systems, with its own noisy ports (a concurrent worker). */
  public worker(plan: FaultPlan): DeviceLifecycle {
    const ids = { next: () => `${this.deviceId}-w-${(this.counter += 1).toString().padStart(6, '0')}` };
    return new DeviceLifecycle(
      { store: faulty<DeviceStore>(this.store, 'store', plan), registry: faulty<DeviceRegistry>(shared.registry, 'registry', plan), ca: faulty<CertificateAuthority>(shared.ca, 'ca', plan), clock: this.clock, ids },
      SETTINGS,
    );
  }

  public sender(principal: string, thingName = this.deviceId) {
    return { thingName, clientId: thingName, principal };
  }

  /** Pre-registered and issued a certificate through the API: ACTIVE with one certificate. */
  public async onboard(): Promise<{ certificateId: string; keys: CryptoKeyPair }> {
    await this.clean.preRegisterDevice({ deviceId: this.deviceId, attributes: {}, actor: ACTOR, requestKey: `pre-${this.deviceId}` });
    return this.issue('first');
  }

  public async issue(name: string): Promise<{ certificateId: string; keys: CryptoKeyPair }> {
    const { csrPem, keys } = await makeCsr(this.deviceId);
    const issued = await this.clean.issueFromCsr({ deviceId: this.deviceId, csrPem, actor: ACTOR, requestKey: `issue-${name}-${this.deviceId}` });
    return { certificateId: issued.certificateId, keys };
  }

  public async pending(requestId = 'r-1'): Promise<{ previous: string; rotated: string; commitDeadline: string }> {
    const { certificateId: previous } = await this.onboard();
    const rotated = await this.clean.requestRotation({ ...this.sender(previous), requestId, csrPem: (await makeCsr(this.deviceId)).csrPem });
    return { previous, rotated: rotated.certificateId, commitDeadline: rotated.commitDeadline };
  }

  public commit(lifecycle: DeviceLifecycle, requestId: string, certificateId: string, principal = certificateId) {
    return attempt(() => lifecycle.commitRotation({ ...this.sender(principal), requestId, certificateId }));
  }

  /** A sweep, as an answer: a per-device failure is transient (the next sweep tries again). */
  public async sweep(lifecycle: DeviceLifecycle = this.clean): Promise<Answer<{ withdrawn: number; committed: number; failed: number }>> {
    const answer = await attempt(() => lifecycle.sweepDueRotations());
    if (answer.ok && answer.value.failed > 0) return { ok: false, code: 'SWEEP_FAILED', message: JSON.stringify(answer.value) };
    return answer;
  }

  /** Sweeps (fault-free) until one finishes without failures. */
  public async sweepUntilClean(): Promise<void> {
    for (let i = 0; i < 5; i += 1) if ((await this.sweep()).ok) return;
    throw new Error('the sweep kept failing without faults');
  }

  public pastDeadline(): void {
    this.clock.advance(COMMIT_SECONDS * 1000 + 1000);
  }

  public usable(): Promise<string[]> {
    return usableCertificateIds(this.fleet, this.deviceId);
  }

  public async events(): Promise<AuditEvent[]> {
    return this.store.events.filter((e) => e.deviceId === this.deviceId);
  }

  /** Everything the shared checker finds, plus the rotation's own rules. */
  public async violations(): Promise<string[]> {
    const found = await deviceViolations(this.fleet, this.deviceId);
    const device = await this.store.getDevice(this.deviceId);
    const records = await this.store.listDeviceCertificates(this.deviceId);
    // Never two ACTIVE certificates once no rotation is in flight (the device has one certificate before it rotates).
    const active = records.filter((r) => r.status === 'ACTIVE');
    if (device?.rotation === undefined && active.length > 1) found.push(`${active.length} ACTIVE certificates on record with no rotation in flight`);
    // Each rotation event once per certificate.
    const seen = new Set<string>();
    for (const event of await this.events()) {
      if (!event.type.startsWith('ROTATION_')) continue;
      const key = `${event.type}|${event.certificateId ?? ''}`;
      if (seen.has(key)) found.push(`audit event ${event.type} recorded twice for certificate ${event.certificateId?.slice(0, 12)}`);
      seen.add(key);
    }
    // The rotation on record names certificates that exist, and a PENDING one names an ACTIVE-on-record new certificate unless the device left ACTIVE.
    // An ISSUING rotation holds the slot before its certificate exists (certificateId ''); the sweep clears it at its deadline.
    if (device?.rotation && device.rotation.state !== 'ISSUING') {
      const fresh = await this.store.getCertificate(device.rotation.certificateId);
      if (!fresh) found.push(`the pending rotation names certificate ${device.rotation.certificateId.slice(0, 12)} that has no record`);
    }
    return found;
  }

  /** The certificates the CA issued through the attacked ports that are not revoked at the CA. */
  public async unrevokedIssued(): Promise<string[]> {
    const ids: string[] = [];
    for (const pem of new Set(this.plan.issuedPems)) {
      const facts = await inspectCertificate(pem);
      if (!(await shared.ca.isRevoked(facts.serialNumber))) ids.push(facts.certificateId);
    }
    return ids;
  }

  public registryStatus(certificateId: string): string | undefined {
    return shared.registry.findCertificate(certificateId)?.status;
  }

  public attached(): string[] {
    return [...(shared.registry.findThing(this.deviceId)?.principals ?? [])];
  }

  public async revokedAtCa(certificateId: string): Promise<boolean> {
    const record = await this.store.getCertificate(certificateId);
    const pem = record?.certificatePem ?? shared.registry.findCertificate(certificateId)?.certificatePem;
    if (!pem) return false;
    return shared.ca.isRevoked((await inspectCertificate(pem)).serialNumber);
  }
}

/** Retries `run` while its answer is transient (a client resending the same message), passing leases by the clock. */
async function converge<T>(c: Case, run: () => Promise<Answer<T>>, first?: Answer<T>): Promise<{ final: Answer<T>; answers: Answer<T>[] }> {
  const answers: Answer<T>[] = [];
  let answer = first ?? (await run());
  answers.push(answer);
  for (let retries = 0; !answer.ok && TRANSIENT.has(answer.code); retries += 1) {
    if (retries >= 6) break;
    if (answer.code === 'REQUEST_IN_PROGRESS') c.clock.advance(61_000);
    answer = await run();
    answers.push(answer);
  }
  return { final: answer, answers };
}

/* ------------------------------------------------------------------------------------------------------------------
 * 1. A fault at every port call, then the same message again until a final answer.
 * ---------------------------------------------------------------------------------------------------------------- */

interface FaultFlow<C> {
  readonly name: string;
  setup(c: Case): Promise<C>;
  run(c: Case, context: C): Promise<Answer>;
  /** What must hold once the retried message got its final answer; answers are all the answers in order. */
  check(c: Case, context: C, final: Answer, answers: Answer[]): Promise<string[]>;
}

const flow = <C>(f: FaultFlow<C>): FaultFlow<unknown> => f as unknown as FaultFlow<unknown>;

const FLOWS: readonly FaultFlow<unknown>[] = [
  flow({
    name: 'rotate request',
    setup: async (c) => ({ ...(await c.onboard()), csrPem: (await makeCsr(c.deviceId)).csrPem }),
    run: (c, { certificateId, csrPem }) => attempt(() => c.lifecycle.requestRotation({ ...c.sender(certificateId), requestId: 'r-1', csrPem })),
    check: async (c, { certificateId: previous, csrPem }, final, answers) => {
      const problems: string[] = [];
      if (!final.ok) return [`final answer ${describeAnswer(final)}`];
      const fresh = (final.value as { certificateId: string }).certificateId;
      const oks = answers.filter((a) => a.ok).map((a) => (a as { value: { certificateId: string } }).value.certificateId);
      if (new Set(oks).size !== 1) problems.push(`answered ${new Set(oks).size} different certificates`);
      const device = await c.store.getDevice(c.deviceId);
      if (device?.rotation?.state !== 'PENDING' || device.rotation.certificateId !== fresh || device.rotation.previousCertificateId !== previous) problems.push(`rotation on record ${JSON.stringify(device?.rotation)}`);
      const unrevoked = await c.unrevokedIssued();
      if (unrevoked.length !== 1 || unrevoked[0] !== fresh) problems.push(`unrevoked certificates issued for the request: ${unrevoked.map((id) => id.slice(0, 12)).join(', ')}`);
      const usable = (await c.usable()).sort();
      if (usable.join() !== [previous, fresh].sort().join()) problems.push(`usable ${usable.map((id) => id.slice(0, 12)).join(', ')}`);
      const op = await c.store.getOperation(operationIdOf(`device:${c.deviceId}`, 'rotate:r-1'));
      if (op?.status !== 'DONE') problems.push(`operation ${op?.status ?? 'missing'}`);
      // The same message once more answers the same certificate.
      const replay = await attempt(() => c.clean.requestRotation({ ...c.sender(previous), requestId: 'r-1', csrPem }));
      if (!replay.ok || replay.value.certificateId !== fresh) problems.push(`the resent request is answered ${describeAnswer(replay)}`);
      return problems;
    },
  }),
  flow({
    name: 'commit',
    setup: (c) => c.pending(),
    run: (c, { rotated }) => c.commit(c.lifecycle, 'r-1', rotated),
    check: async (c, { previous, rotated }, final, answers) => {
      const problems: string[] = [];
      if (!final.ok) return [`final answer ${describeAnswer(final)}`];
      for (const a of answers.filter((x) => x.ok)) {
        if (JSON.stringify(a.value) !== JSON.stringify({ requestId: 'r-1', certificateId: rotated, retiredCertificateId: previous })) problems.push(`answered ${describeAnswer(a)}`);
      }
      if ((await c.store.getDevice(c.deviceId))?.rotation !== undefined) problems.push('rotation still on record');
      if ((await c.store.getCertificate(previous))?.status !== 'RETIRED') problems.push(`previous certificate ${(await c.store.getCertificate(previous))?.status}`);
      if (c.registryStatus(previous) !== 'INACTIVE' || c.attached().includes(previous)) problems.push(`previous certificate ${c.registryStatus(previous)} in AWS IoT, attached: ${c.attached().includes(previous)}`);
      if ((await c.usable()).join() !== rotated) problems.push(`usable: ${(await c.usable()).map((id) => id.slice(0, 12)).join(', ')}`);
      const again = await c.commit(c.clean, 'r-1', rotated);
      if (!again.ok) problems.push(`a repeated commit is answered ${describeAnswer(again)}`);
      return problems;
    },
  }),
  flow({
    name: 'sweep withdrawing a missed deadline',
    setup: async (c) => {
      const p = await c.pending();
      c.pastDeadline();
      return p;
    },
    run: (c) => c.sweep(c.lifecycle),
    check: async (c, { previous, rotated }, final) => {
      const problems: string[] = [];
      if (!final.ok) return [`final answer ${describeAnswer(final)}`];
      if ((await c.store.getDevice(c.deviceId))?.rotation !== undefined) problems.push('rotation still on record');
      if ((await c.store.getCertificate(rotated))?.status !== 'REVOKED' || c.registryStatus(rotated) !== 'REVOKED' || !(await c.revokedAtCa(rotated))) problems.push('the new certificate is not revoked everywhere');
      if ((await c.usable()).join() !== previous) problems.push(`usable: ${(await c.usable()).map((id) => id.slice(0, 12)).join(', ')}`);
      const late = await c.commit(c.clean, 'r-1', rotated);
      if (late.ok || late.code !== 'CERTIFICATE_WITHDRAWN') problems.push(`a late commit is answered ${describeAnswer(late)}`);
      return problems;
    },
  }),
];

async function runFaultCase(f: FaultFlow<unknown>, fault: { k: number; mode: Mode } | undefined): Promise<{ calls: number; problems: string[]; injected?: string }> {
  const c = new Case(`f-${f.name.slice(0, 6).replace(/\W/g, '')}`);
  const context = await f.setup(c);
  c.plan.arm(fault?.k ?? Number.POSITIVE_INFINITY, fault?.mode ?? 'throw');
  const first = await f.run(c, context);
  const calls = c.plan.calls;
  const injected = c.plan.injected;
  c.plan.disarm();
  const { final, answers } = await converge(c, () => f.run(c, context), first);
  const problems = [...(await f.check(c, context, final, answers)), ...(await c.violations()).map((v) => `invariant: ${v}`)];
  return { calls, problems: problems.map((p) => `${injected ?? 'no fault'} (${fault?.mode ?? '-'}): ${p}`), injected };
}

describe.each(FLOWS.map((f) => [f.name, f] as const))('a fault at every port call: %s', (_name, f) => {
  test('each call k fails once (failed before it was made, or made and its answer lost); the resent message converges and every invariant holds', async () => {
    const baseline = await runFaultCase(f, undefined);
    expect(baseline.problems).toEqual([]);
    const results = await inBatches(faultsFor(baseline.calls), 4, (fault) => runFaultCase(f, fault));
    expect(results.filter((r) => r.injected).length).toBe(MODES.length * baseline.calls);
    expect(results.flatMap((r) => r.problems)).toEqual([]);
  });
});

describe('a fault during the commit, the device silent until after the deadline', () => {
  test('whatever call fails, the sweep and the resent commit agree: committed (new usable) or withdrawn (old usable), never neither', async () => {
    const probe = new Case('cs-probe');
    const p = await probe.pending();
    probe.plan.arm(Number.POSITIVE_INFINITY, 'throw');
    await probe.commit(probe.lifecycle, 'r-1', p.rotated);
    const n = probe.plan.calls;
    const problems = (
      await inBatches(faultsFor(n), 4, async ({ k, mode }) => {
        const found: string[] = [];
        const c = new Case('cs');
        const { previous, rotated } = await c.pending();
        c.plan.arm(k, mode);
        const first = await c.commit(c.lifecycle, 'r-1', rotated);
        c.plan.disarm();
        const decided = (await c.store.getDevice(c.deviceId))?.rotation?.state !== 'PENDING';
        c.pastDeadline();
        await c.sweepUntilClean();
        const { final } = await converge(c, () => c.commit(c.clean, 'r-1', rotated));
        const label = `${c.plan.injected} (${mode}), first ${describeAnswer(first)}`;
        const usable = await c.usable();
        if (final.ok) {
          if (usable.join() !== rotated) found.push(`${label}: commit accepted but usable ${usable.length}`);
        } else if (final.code === 'CERTIFICATE_WITHDRAWN') {
          if (decided) found.push(`${label}: the commit had been decided, then withdrawn`);
          if (usable.join() !== previous) found.push(`${label}: withdrawn but usable ${usable.length}`);
        } else found.push(`${label}: final ${describeAnswer(final)}`);
        found.push(...(await c.violations()).map((v) => `${label}: invariant: ${v}`));
        return found;
      })
    ).flat();
    expect(problems).toEqual([]);
  });
});

describe('a fault during the request, and the device never sends it again', () => {
});

/* ------------------------------------------------------------------------------------------------------------------
 * 2. Races: two workers over the same systems. The second starts right before call m of the first, for every m the
 *    first makes, and both then run with seeded scheduler noise at every port call.
 * ---------------------------------------------------------------------------------------------------------------- */

function noisy(seed: number): FaultPlan {
  const plan = new FaultPlan();
  const random = rng(seed);
  plan.jitter = () => Math.floor(random() * 4);
  return plan;
}

/** Runs `first` on `plan`'s ports and starts `second` right before its call m; answers both. */
async function raceAt<A, B>(plan: FaultPlan, m: number, first: () => Promise<A>, second: () => Promise<B>): Promise<[A, B]> {
  let started: Promise<B> | undefined;
  plan.before = () => {
    if (started === undefined && plan.calls + 1 >= m) started = second();
  };
  const a = await first();
  plan.before = undefined;
  return [a, await (started ?? second())];
}

/** How many port calls `run` makes on a fresh case, fault-free (the range of m). */
async function callsOf(setup: (c: Case) => Promise<(l: DeviceLifecycle) => Promise<unknown>>): Promise<number> {
  const c = new Case('probe');
  const run = await setup(c);
  const plan = new FaultPlan();
  await run(c.worker(plan));
  return plan.calls;
}

/**
 * Runs `race(m)` for m = 1, 3, 5, ... n (every other call, for time; the noise moves the second change around the
 * calls skipped), a few cases at a time, and collects what went wrong.
 */
async function everyInterleaving(n: number, race: (m: number) => Promise<string[]>): Promise<string[]> {
  const ms = [...new Set([...Array.from({ length: Math.ceil(n / 2) }, (_, i) => 2 * i + 1), n])];
  return (await inBatches(ms, 4, race)).flat();
}

describe('races (the second change starts before a call of the first, for every other call)', () => {
  test('two rotate requests with different requestIds: one certificate pending, the loser refused ROTATION_IN_PROGRESS and its certificate revoked everywhere', async () => {
    const n = await callsOf(async (c) => {
      const { certificateId } = await c.onboard();
      const csrPem = (await makeCsr(c.deviceId)).csrPem;
      return (l) => l.requestRotation({ ...c.sender(certificateId), requestId: 'r-a', csrPem });
    });
    const problems = await everyInterleaving(n, async (m) => {
      const found: string[] = [];
      const c = new Case(`two-${m}`);
      const { certificateId: previous } = await c.onboard();
      const [pa, pb] = [noisy(m), noisy(m + 100)];
      const [a, b] = [c.worker(pa), c.worker(pb)];
      const [csrA, csrB] = [(await makeCsr(c.deviceId)).csrPem, (await makeCsr(c.deviceId)).csrPem];
      const ask = (l: DeviceLifecycle, requestId: string, csrPem: string) => () => attempt(() => l.requestRotation({ ...c.sender(previous), requestId, csrPem }));
      const [ra, rb] = await raceAt(pa, m, () => converge(c, ask(a, 'r-a', csrA)), () => converge(c, ask(b, 'r-b', csrB)));
      const label = `m=${m}: ${describeAnswer(ra.final)} | ${describeAnswer(rb.final)}`;
      const oks = [ra.final, rb.final].filter((x) => x.ok);
      if (oks.length !== 1) found.push(`${label}: ${oks.length} accepted`);
      const loser = [ra.final, rb.final].find((x) => !x.ok);
      if (loser && !loser.ok && loser.code !== 'ROTATION_IN_PROGRESS') found.push(`${label}: loser answered ${loser.code}`);
      const usable = await c.usable();
      if (usable.length !== 2 || !usable.includes(previous)) found.push(`${label}: usable ${usable.length}`);
      for (const pem of [...pa.issuedPems, ...pb.issuedPems]) {
        const { certificateId, serialNumber } = await inspectCertificate(pem);
        const winner = oks[0]?.ok && (oks[0].value as { certificateId: string }).certificateId === certificateId;
        if (!winner && !(await shared.ca.isRevoked(serialNumber))) found.push(`${label}: the loser's certificate ${certificateId.slice(0, 12)} is not revoked at the CA`);
      }
      found.push(...(await c.violations()).map((v) => `${label}: ${v}`));
      return found;
    });
    expect(problems).toEqual([]);
  });

  test.each([
    ['suspend', 'SUSPENDED'],
    ['revoke the device', 'REVOKED'],
  ] as const)('a rotate request racing "%s": the device ends %s with no usable certificate, and after the deadline nothing is left in flight', async (what, status) => {
    const n = await callsOf(async (c) => {
      const { certificateId } = await c.onboard();
      const csrPem = (await makeCsr(c.deviceId)).csrPem;
      return (l) => l.requestRotation({ ...c.sender(certificateId), requestId: 'r-1', csrPem });
    });
    let accepted = 0;
    const problems = await everyInterleaving(n, async (m) => {
      const found: string[] = [];
      const c = new Case(`rs-${status.slice(0, 3)}-${m}`);
      const { certificateId: previous } = await c.onboard();
      const plan = noisy(m);
      const device = c.worker(plan);
      const operator = c.worker(noisy(m + 100));
      const csrPem = (await makeCsr(c.deviceId)).csrPem;
      const change = () =>
        attempt(() =>
          what === 'suspend'
            ? operator.suspendDevice({ deviceId: c.deviceId, actor: ACTOR, requestKey: 'change' })
            : operator.revokeDevice({ deviceId: c.deviceId, reason: 'KEY_COMPROMISE', actor: ACTOR, requestKey: 'change' }),
        );
      const [rotation, changed] = await raceAt(plan, m, () => converge(c, () => attempt(() => device.requestRotation({ ...c.sender(previous), requestId: 'r-1', csrPem }))), () => converge(c, change));
      if (rotation.final.ok) accepted += 1;
      const label = `m=${m}: rotate ${describeAnswer(rotation.final)}, ${what} ${describeAnswer(changed.final)}`;
      if (!changed.final.ok) found.push(`${label}: the operator's change failed`);
      if ((await c.store.getDevice(c.deviceId))?.status !== status) found.push(`${label}: device not ${status}`);
      const usable = await c.usable();
      if (usable.length !== 0) found.push(`${label}: ${usable.length} usable certificates`);
      found.push(...(await c.violations()).map((v) => `${label}: ${v}`));
      c.pastDeadline();
      await c.sweepUntilClean();
      if ((await c.store.getDevice(c.deviceId))?.rotation !== undefined) found.push(`${label}: rotation still in flight after the sweep`);
      found.push(...(await c.violations()).map((v) => `${label}: after the sweep: ${v}`));
      return found;
    });
    expect(problems).toEqual([]);
    expect(accepted).toBeGreaterThan(0); // some interleavings did issue before the change
  });

  test('a rotate request racing a JITR first connect of a factory certificate of the same device: both recorded, nothing unrecorded usable', async () => {
    const n = await callsOf(async (c) => {
      const { certificateId } = await c.onboard();
      const csrPem = (await makeCsr(c.deviceId)).csrPem;
      return (l) => l.requestRotation({ ...c.sender(certificateId), requestId: 'r-1', csrPem });
    });
    const caId = await certificateIdOf(shared.caCertificatePem);
    const problems = await everyInterleaving(n, async (m) => {
      const c = new Case(`jitr-${m}`);
      const { certificateId: previous } = await c.onboard();
      const pem = await shared.ca.mintDeviceCertificate(c.deviceId, (await makeCsr(c.deviceId)).csrPem, 365);
      const registered = await shared.registry.registerPendingActivation(pem, caId);
      const event = { certificateId: registered.certificateId, caCertificateId: caId, timestamp: c.clock.now().getTime(), certificateStatus: 'PENDING_ACTIVATION' as const, awsAccountId: '000000000000', certificateRegistrationTimestamp: String(c.clock.now().getTime()) };
      const plan = noisy(m);
      const device = c.worker(plan);
      const jitr = c.worker(noisy(m + 100));
      const csrPem = (await makeCsr(c.deviceId)).csrPem;
      const [rotation, activation] = await raceAt(plan, m, () => converge(c, () => attempt(() => device.requestRotation({ ...c.sender(previous), requestId: 'r-1', csrPem }))), () => attempt(() => jitr.registerOnFirstConnect(event, { deliveryId: `d-${m}` })));
      const label = `m=${m}: rotate ${describeAnswer(rotation.final)}, JITR ${describeAnswer(activation)}`;
      const found: string[] = [];
      if (!rotation.final.ok) found.push(`${label}: the rotation was refused`);
      // A JITR activation adds a second ACTIVE certificate by design: not the rotation's doing.
      found.push(...(await c.violations()).filter((v) => !v.includes('ACTIVE certificates on record')).map((v) => `${label}: ${v}`));
      return found;
    });
    expect(problems).toEqual([]);
  });

  test('commit racing the sweep at the deadline: exactly one decides, one usable certificate, the answer agrees with the outcome', async () => {
    const n = await callsOf(async (c) => {
      const { rotated } = await c.pending();
      return (l) => l.commitRotation({ ...c.sender(rotated), requestId: 'r-1', certificateId: rotated });
    });
    const outcomes = new Set<string>();
    const problems = await everyInterleaving(n, async (m) => {
      const found: string[] = [];
      const c = new Case(`cvs-${m}`);
      const { previous, rotated } = await c.pending();
      c.pastDeadline();
      const plan = noisy(m);
      const [commit, sweep] = await raceAt(plan, m, () => converge(c, () => c.commit(c.worker(plan), 'r-1', rotated)), () => converge(c, () => c.sweep(c.worker(noisy(m + 100)))));
      const label = `m=${m}: commit ${describeAnswer(commit.final)}, sweep ${describeAnswer(sweep.final)}`;
      outcomes.add(commit.final.ok ? 'committed' : commit.final.code);
      const usable = await c.usable();
      if (commit.final.ok ? usable.join() !== rotated : usable.join() !== previous) found.push(`${label}: usable ${usable.map((id) => id.slice(0, 12)).join(', ')}`);
      if (!commit.final.ok && commit.final.code !== 'CERTIFICATE_WITHDRAWN') found.push(`${label}: commit answer`);
      found.push(...(await c.violations()).map((v) => `${label}: ${v}`));
      return found;
    });
    expect(problems).toEqual([]);
    expect([...outcomes].sort()).toEqual(['CERTIFICATE_WITHDRAWN', 'committed']); // both sides won somewhere
  });

  test('two deliveries of one commit, and two overlapping sweeps: one retirement, one withdrawal, each recorded once', async () => {
    const n = await callsOf(async (c) => {
      const { rotated } = await c.pending();
      return (l) => l.commitRotation({ ...c.sender(rotated), requestId: 'r-1', certificateId: rotated });
    });
    const problems = await everyInterleaving(n, async (m) => {
      const found: string[] = [];
      const c = new Case(`cc-${m}`);
      const { previous, rotated } = await c.pending();
      const plan = noisy(m);
      const [x, y] = await raceAt(plan, m, () => converge(c, () => c.commit(c.worker(plan), 'r-1', rotated)), () => converge(c, () => c.commit(c.worker(noisy(m + 100)), 'r-1', rotated)));
      const label = `m=${m}: ${describeAnswer(x.final)} | ${describeAnswer(y.final)}`;
      if (!x.final.ok || !y.final.ok || JSON.stringify(x.final.value) !== JSON.stringify(y.final.value)) found.push(`${label}: the two deliveries are not answered the same`);
      if ((await c.usable()).join() !== rotated) found.push(`${label}: usable`);
      if ((await c.events()).filter((e) => e.type === 'CERTIFICATE_RETIRED' && e.certificateId === previous).length !== 1) found.push(`${label}: CERTIFICATE_RETIRED not once`);
      found.push(...(await c.violations()).map((v) => `${label}: ${v}`));

      const w = new Case(`ss-${m}`);
      const pw = await w.pending();
      w.pastDeadline();
      const wp = noisy(m + 200);
      await raceAt(wp, m, () => converge(w, () => w.sweep(w.worker(wp))), () => converge(w, () => w.sweep(w.worker(noisy(m + 300)))));
      if ((await w.usable()).join() !== pw.previous) found.push(`m=${m}: overlapping sweeps: usable`);
      if ((await w.events()).filter((e) => e.type === 'CERTIFICATE_REVOKED').length !== 1) found.push(`m=${m}: overlapping sweeps: CERTIFICATE_REVOKED not once`);
      found.push(...(await w.violations()).map((v) => `m=${m}: overlapping sweeps: ${v}`));
      return found;
    });
    expect(problems).toEqual([]);
  });

  test('a commit racing a suspension, then a resume and the resent commit: the new certificate is the one usable one, the old one retired', async () => {
    const n = await callsOf(async (c) => {
      const { rotated } = await c.pending();
      return (l) => l.commitRotation({ ...c.sender(rotated), requestId: 'r-1', certificateId: rotated });
    });
    const problems = await everyInterleaving(n, async (m) => {
      const found: string[] = [];
      const c = new Case(`csu-${m}`);
      const { previous, rotated } = await c.pending();
      const plan = noisy(m);
      const operator = c.worker(noisy(m + 100));
      const [commit, suspended] = await raceAt(
        plan,
        m,
        () => converge(c, () => c.commit(c.worker(plan), 'r-1', rotated)),
        () => converge(c, () => attempt(() => operator.suspendDevice({ deviceId: c.deviceId, actor: ACTOR, requestKey: 'suspend' }))),
      );
      const label = `m=${m}: commit ${describeAnswer(commit.final)}, suspend ${describeAnswer(suspended.final)}`;
      if ((await c.usable()).length !== 0) found.push(`${label}: usable while suspended`);
      await c.clean.resumeDevice({ deviceId: c.deviceId, actor: ACTOR, requestKey: 'resume' });
      const again = await converge(c, () => c.commit(c.clean, 'r-1', rotated));
      if (!again.final.ok) found.push(`${label}: resent commit ${describeAnswer(again.final)}`);
      if ((await c.usable()).join() !== rotated) found.push(`${label}: usable after resume: ${(await c.usable()).length}`);
      if ((await c.store.getCertificate(previous))?.status !== 'RETIRED') found.push(`${label}: previous ${(await c.store.getCertificate(previous))?.status}`);
      found.push(...(await c.violations()).map((v) => `${label}: ${v}`));
      return found;
    });
    expect(problems).toEqual([]);
  });
});

/* ------------------------------------------------------------------------------------------------------------------
 * 3. Interleavings that need a precise order (a gate on one port call).
 * ---------------------------------------------------------------------------------------------------------------- */

/** Holds the first call matching `when` until `open()`; `reached` resolves when it is held. */
function gate(plan: FaultPlan, when: (label: string, args: unknown[]) => boolean) {
  let release!: () => void;
  let reachedResolve!: () => void;
  const opened = new Promise<void>((resolve) => (release = resolve));
  const reached = new Promise<void>((resolve) => (reachedResolve = resolve));
  let armed = true;
  plan.before = async (label, args) => {
    if (armed && when(label, args)) {
      armed = false;
      reachedResolve();
      await opened;
    }
  };
  return { reached, open: () => release() };
}

describe('precise interleavings', () => {
  test('a sweep that finds a rotation a commit clears meanwhile does not count it as withdrawn', async () => {
    const c = new Case('miscount');
    const { rotated } = await c.pending();
    c.pastDeadline();
    const held = gate(c.plan, (label) => label === 'store.getDevice');
    const sweep = c.sweep(c.lifecycle);
    await held.reached;
    expect((await c.commit(c.clean, 'r-1', rotated)).ok).toBe(true);
    held.open();
    expect(await sweep).toEqual({ ok: true, value: { withdrawn: 0, committed: 0, failed: 0 } });
  });

  test('a resume between the commit\'s retirement in AWS IoT and its record keeps the retiring certificate INACTIVE in AWS IoT', async () => {
    const c = new Case('resume-race');
    const { previous, rotated } = await c.pending();
    // The commit is decided, then its AWS IoT step fails (the device will resend it).
    const failOnce = jest.spyOn(shared.registry, 'updateCertificateStatus').mockRejectedValueOnce(new UpstreamError('UPSTREAM_THROTTLED', 'UpdateCertificate throttled', true));
    expect((await c.commit(c.clean, 'r-1', rotated)).ok).toBe(false);
    failOnce.mockRestore();
    expect((await c.store.getDevice(c.deviceId))?.rotation?.state).toBe('COMMITTING');
    // The operator suspends the device (both certificates INACTIVE).
    await c.clean.suspendDevice({ deviceId: c.deviceId, actor: ACTOR, requestKey: 'suspend' });
    // The resent commit finishes the decision: held right after it detached the previous certificate...
    const held = gate(c.plan, (label, args) => label === 'store.getDevice' && c.plan.log.includes('registry.detachCertificate') && args[0] === c.deviceId);
    c.clock.advance(61_000);
    const commit = c.commit(c.lifecycle, 'r-1', rotated);
    await held.reached;
    // ...while the operator resumes the device.
    await c.clean.resumeDevice({ deviceId: c.deviceId, actor: ACTOR, requestKey: 'resume' });
    held.open();
    const answer = await commit;

    expect(answer.ok).toBe(true);
    expect((await c.store.getCertificate(previous))?.status).toBe('RETIRED');
    expect({ previousInAwsIot: c.registryStatus(previous), violations: await c.violations() }).toEqual({ previousInAwsIot: 'INACTIVE', violations: [] });
  });

  test('a revocation of the previous certificate that stopped before the CA, overtaken by the commit, is finished by its retry (RETIRED → REVOKED, the CA revokes)', async () => {
    const c = new Case('half-revoke');
    const { previous, rotated } = await c.pending();
    // The operator revokes the old certificate (KEY_COMPROMISE): AWS IoT REVOKED and detached, then the CA call fails.
    const caFails = jest.spyOn(shared.ca, 'revokeCertificate').mockRejectedValueOnce(new UpstreamError('UPSTREAM_FAILURE', 'RevokeCertificate failed', true));
    const revoke = () => attempt(() => c.clean.revokeCertificate({ deviceId: c.deviceId, certificateId: previous, reason: 'KEY_COMPROMISE', actor: ACTOR, requestKey: 'revoke-old' }));
    expect((await revoke()).ok).toBe(false);
    caFails.mockRestore();
    // The device commits its rotation meanwhile.
    expect((await c.commit(c.clean, 'r-1', rotated)).ok).toBe(true);
    // The operator's retry of the revocation.
    c.clock.advance(61_000);
    const retried = await revoke();

    expect({ retried: retried.ok ? 'ok' : retried.code, record: (await c.store.getCertificate(previous))?.status, onTheCrl: await c.revokedAtCa(previous) }).toEqual({ retried: 'ok', record: 'REVOKED', onTheCrl: true });
  });
});

/* ------------------------------------------------------------------------------------------------------------------
 * 4. Revocations around a rotation.
 * ---------------------------------------------------------------------------------------------------------------- */

describe('revocations around a rotation', () => {
  test('a commit processed after an operator revoked the new certificate is refused, and the old certificate stays usable', async () => {
    const c = new Case('rev-new');
    const { previous, rotated } = await c.pending();
    // The device connected with the new certificate and published its commit; the message waits in the queue while an
    // operator revokes that new certificate (say, the factory reports its key leaked).
    await c.clean.revokeCertificate({ deviceId: c.deviceId, certificateId: rotated, reason: 'KEY_COMPROMISE', actor: ACTOR, requestKey: 'revoke-new' });
    const answer = await c.commit(c.clean, 'r-1', rotated);

    expect({ answer: answer.ok ? 'accepted' : answer.code, previous: c.registryStatus(previous), usable: (await c.usable()).length }).toEqual({ answer: 'CERTIFICATE_WITHDRAWN', previous: 'ACTIVE', usable: 1 });
  });

  test('revoking the certificate a pending rotation was requested over (KEY_COMPROMISE) withdraws that rotation\'s certificate at once', async () => {
    const c = new Case('rev-old');
    const { previous, rotated } = await c.pending();
    // Whoever holds the leaked key asked for the rotation; the operator revokes the leaked certificate.
    await c.clean.revokeCertificate({ deviceId: c.deviceId, certificateId: previous, reason: 'KEY_COMPROMISE', actor: ACTOR, requestKey: 'revoke-old' });
    const commit = await c.commit(c.clean, 'r-1', rotated);

    expect({ commit: commit.ok ? 'accepted' : commit.code, fresh: c.registryStatus(rotated) }).toEqual({ commit: 'CERTIFICATE_WITHDRAWN', fresh: 'REVOKED' });
  });

  test('a certificate retired by a rotation can still be revoked for KEY_COMPROMISE, at the CA too', async () => {
    const c = new Case('rev-retired');
    const { previous, rotated } = await c.pending();
    expect((await c.commit(c.clean, 'r-1', rotated)).ok).toBe(true);

    const revoked = await attempt(() => c.clean.revokeCertificate({ deviceId: c.deviceId, certificateId: previous, reason: 'KEY_COMPROMISE', actor: ACTOR, requestKey: 'revoke-retired' }));

    expect({ revoked: revoked.ok ? 'ok' : revoked.code, onTheCrl: await c.revokedAtCa(previous) }).toEqual({ revoked: 'ok', onTheCrl: true });
  });

  test('revoking a device (KEY_COMPROMISE) after a rotation revokes its retired certificate too, in AWS IoT and at the CA', async () => {
    const c = new Case('rev-dev-retired');
    const { previous, rotated } = await c.pending();
    expect((await c.commit(c.clean, 'r-1', rotated)).ok).toBe(true);

    await c.clean.revokeDevice({ deviceId: c.deviceId, reason: 'KEY_COMPROMISE', actor: ACTOR, requestKey: 'revoke-device' });

    expect({ inAwsIot: c.registryStatus(previous), onTheCrl: await c.revokedAtCa(previous), violations: await c.violations() }).toEqual({ inAwsIot: 'REVOKED', onTheCrl: true, violations: [] });
  });

  test('a rotation may not bring back the key of any earlier certificate of the device (a revoked one included)', async () => {
    const c = new Case('old-key');
    const { keys: leakedKeys, certificateId: leaked } = await c.onboard();
    const { certificateId: other } = await c.issue('second');
    await c.clean.revokeCertificate({ deviceId: c.deviceId, certificateId: leaked, reason: 'KEY_COMPROMISE', actor: ACTOR, requestKey: 'revoke-leaked' });

    const answer = await attempt(async () => c.clean.requestRotation({ ...c.sender(other), requestId: 'r-1', csrPem: (await makeCsr(c.deviceId, { keys: leakedKeys })).csrPem }));

    expect(answer.ok ? 'accepted' : answer.code).toBe('INVALID_CSR');
  });

  test('a rotation over the key of the pending rotation\'s own certificate, or of the current one, is refused before the CA is asked', async () => {
    const c = new Case('same-key');
    const { keys, certificateId: previous } = await c.onboard();
    const asked = jest.spyOn(shared.ca, 'requestCertificate');
    const answer = await attempt(async () => c.clean.requestRotation({ ...c.sender(previous), requestId: 'r-1', csrPem: (await makeCsr(c.deviceId, { keys })).csrPem }));
    expect(answer.ok ? 'accepted' : answer.code).toBe('INVALID_CSR');
    expect(asked).not.toHaveBeenCalled();
    asked.mockRestore();
  });
});

/* ------------------------------------------------------------------------------------------------------------------
 * 5. Hostile devices.
 * ---------------------------------------------------------------------------------------------------------------- */

describe('hostile device input', () => {
  test('a principal that is not a certificate, another device\'s certificate, or another device\'s topic: refused, nothing issued, nothing recorded', async () => {
    const c = new Case('hostile-a');
    const { certificateId: mine } = await c.onboard();
    const victim = { deviceId: `${c.deviceId}-victim` };
    await c.clean.preRegisterDevice({ deviceId: victim.deviceId, attributes: {}, actor: ACTOR, requestKey: 'pre-v' });
    const { certificateId: theirs } = await c.clean.issueFromCsr({ deviceId: victim.deviceId, csrPem: (await makeCsr(victim.deviceId)).csrPem, actor: ACTOR, requestKey: `issue-${victim.deviceId}` });
    const asked = jest.spyOn(shared.ca, 'requestCertificate');
    const csr = (id: string) => makeCsr(id).then((x) => x.csrPem);
    const cases: [string, () => Promise<unknown>][] = [
      ['a Cognito identity', async () => c.clean.requestRotation({ thingName: c.deviceId, clientId: c.deviceId, principal: 'us-east-1:0f0e0d0c-0000-4000-8000-000000000000', requestId: 'h-1', csrPem: await csr(c.deviceId) })],
      ['an IAM principal', async () => c.clean.requestRotation({ thingName: c.deviceId, clientId: c.deviceId, principal: 'AIDAEXAMPLE:session', requestId: 'h-2', csrPem: await csr(c.deviceId) })],
      ['an upper-case certificate id', async () => c.clean.requestRotation({ ...c.sender(mine.toUpperCase()), requestId: 'h-3', csrPem: await csr(c.deviceId) })],
      ['an empty principal', async () => c.clean.requestRotation({ ...c.sender(''), requestId: 'h-4', csrPem: await csr(c.deviceId) })],
      ['another device\'s certificate on my topic', async () => c.clean.requestRotation({ ...c.sender(theirs), requestId: 'h-5', csrPem: await csr(c.deviceId) })],
      ['my certificate on another device\'s topic', async () => c.clean.requestRotation({ ...c.sender(mine, victim.deviceId), requestId: 'h-6', csrPem: await csr(victim.deviceId) })],
      ['a client id that is not the thing', async () => c.clean.requestRotation({ thingName: c.deviceId, clientId: `${c.deviceId}-x`, principal: mine, requestId: 'h-7', csrPem: await csr(c.deviceId) })],
      ['a CSR for another device', async () => c.clean.requestRotation({ ...c.sender(mine), requestId: 'h-8', csrPem: await csr(victim.deviceId) })],
      ['an unknown certificate id', async () => c.clean.requestRotation({ ...c.sender('ab'.repeat(32)), requestId: 'h-9', csrPem: await csr(c.deviceId) })],
    ];
    const answers: Record<string, string> = {};
    for (const [name, run] of cases) {
      const a = await attempt(run);
      answers[name] = a.ok ? 'accepted' : a.code;
    }
    expect(answers).toEqual({
      'a Cognito identity': 'PRINCIPAL_NOT_ALLOWED',
      'an IAM principal': 'PRINCIPAL_NOT_ALLOWED',
      'an upper-case certificate id': 'PRINCIPAL_NOT_ALLOWED',
      'an empty principal': 'PRINCIPAL_NOT_ALLOWED',
      'another device\'s certificate on my topic': 'PRINCIPAL_NOT_ALLOWED',
      'my certificate on another device\'s topic': 'PRINCIPAL_NOT_ALLOWED',
      'a client id that is not the thing': 'PRINCIPAL_NOT_ALLOWED',
      'a CSR for another device': 'INVALID_CSR',
      'an unknown certificate id': 'PRINCIPAL_NOT_ALLOWED',
    });
    expect(asked).not.toHaveBeenCalled();
    asked.mockRestore();
    expect((await c.store.getDevice(c.deviceId))?.rotation).toBeUndefined();
    expect((await c.store.getDevice(victim.deviceId))?.rotation).toBeUndefined();
  });

  test('a requestId reused with another CSR is refused (while pending, and after the commit); the same one is answered the same certificate', async () => {
    const c = new Case('reuse');
    const { certificateId: previous } = await c.onboard();
    const { csrPem } = await makeCsr(c.deviceId);
    const first = await c.clean.requestRotation({ ...c.sender(previous), requestId: 'r-1', csrPem });
    const other = await attempt(async () => c.clean.requestRotation({ ...c.sender(previous), requestId: 'r-1', csrPem: (await makeCsr(c.deviceId)).csrPem }));
    expect(other.ok ? 'accepted' : other.code).toBe('IDEMPOTENCY_KEY_REUSED');
    const again = await c.clean.requestRotation({ ...c.sender(previous), requestId: 'r-1', csrPem });
    expect(again.certificateId).toBe(first.certificateId);
    expect((await c.commit(c.clean, 'r-1', first.certificateId)).ok).toBe(true);
    const afterCommit = await attempt(async () => c.clean.requestRotation({ ...c.sender(first.certificateId), requestId: 'r-1', csrPem: (await makeCsr(c.deviceId)).csrPem }));
    expect(afterCommit.ok ? 'accepted' : afterCommit.code).toBe('IDEMPOTENCY_KEY_REUSED');
    expect(await c.violations()).toEqual([]);
  });

  test('commits naming a certificate of another device, another requestId, or over the old certificate: refused, nothing changes', async () => {
    const c = new Case('commit-h');
    const { previous, rotated } = await c.pending();
    // A second device in the same systems, with its own pending rotation.
    const otherId = `${c.deviceId}-other`;
    await c.clean.preRegisterDevice({ deviceId: otherId, attributes: {}, actor: ACTOR, requestKey: 'pre-other' });
    const otherFirst = await c.clean.issueFromCsr({ deviceId: otherId, csrPem: (await makeCsr(otherId)).csrPem, actor: ACTOR, requestKey: `issue-${otherId}` });
    const o = await c.clean.requestRotation({ thingName: otherId, clientId: otherId, principal: otherFirst.certificateId, requestId: 'r-1', csrPem: (await makeCsr(otherId)).csrPem });
    const oRotated = o.certificateId;
    const answers = [
      await c.commit(c.clean, 'r-x', rotated), // my new certificate, another requestId
      await c.commit(c.clean, 'r-1', rotated, previous), // over the old certificate
      await c.commit(c.clean, 'r-1', oRotated), // another device's pending certificate (as its principal)
    ].map((a) => (a.ok ? 'accepted' : a.code));
    expect(answers).toEqual(['NO_ROTATION_PENDING', 'PRINCIPAL_NOT_ALLOWED', 'NO_ROTATION_PENDING']);
    expect((await c.store.getDevice(c.deviceId))?.rotation?.state).toBe('PENDING');
    expect((await c.store.getDevice(otherId))?.rotation?.state).toBe('PENDING');
    expect((await c.usable()).sort()).toEqual([previous, rotated].sort());
  });

  test('a commit that is refused (naming the old certificate, over the old connection) does not block the right commit under the same requestId', async () => {
    const c = new Case('poison');
    const { previous, rotated } = await c.pending();
    // A firmware that takes certificateId from the certificate it is connected with, before it reconnects.
    const wrong = await c.commit(c.clean, 'r-1', previous);
    expect(wrong.ok ? 'accepted' : wrong.code).toBe('NO_ROTATION_PENDING');
    // It reconnects with the new certificate and commits properly (docs/rotation.md: IDEMPOTENCY_KEY_REUSED only when "committed with another certificateId").
    c.clock.advance(61_000);
    const right = await c.commit(c.clean, 'r-1', rotated);
    expect(right.ok ? 'accepted' : right.code).toBe('accepted');
  });

  test('the function: malformed, oversized and mistyped messages are answered INVALID_REQUEST on their own device\'s topic and change nothing', async () => {
    const c = new Case('handler');
    const { certificateId: principal } = await c.onboard();
    const published: { topic: string; message: Record<string, unknown> }[] = [];
    const handler = createRotationHandler({ lifecycle: c.clean, messenger: { publish: async (topic, message) => void published.push({ topic, message: { ...message } }) }, logger: quiet });
    const topic = `devices/${c.deviceId}/certificates/rotate`;
    const send = (payload: unknown, step: 'rotate' | 'commit' = 'rotate') => handler(ruleMessageOf(step, payload, step === 'rotate' ? topic : topic.replace('rotate', 'commit'), { clientId: c.deviceId, principal }));
    await send({ requestId: 'ok-1', csr: 'x'.repeat(16_385) });
    await send({ requestId: ['r'], csr: (await makeCsr(c.deviceId)).csrPem });
    await send({ requestId: 'r-2', csr: { pem: 'x' } });
    await send([1, 2, 3]);
    await send({ requestId: 'r-3', certificateId: 'A'.repeat(64) }, 'commit');
    await send({ requestId: 'r 4', csr: (await makeCsr(c.deviceId)).csrPem });
    expect(published.map((p) => [p.topic.split('/').slice(-2).join('/'), p.message.code])).toEqual([
      ['rotate/rejected', 'INVALID_REQUEST'],
      ['rotate/rejected', 'INVALID_REQUEST'],
      ['rotate/rejected', 'INVALID_REQUEST'],
      ['rotate/rejected', 'INVALID_REQUEST'],
      ['commit/rejected', 'INVALID_REQUEST'],
      ['rotate/rejected', 'INVALID_REQUEST'],
    ]);
    expect(published.every((p) => p.topic.startsWith(`devices/${c.deviceId}/`))).toBe(true);
    expect((await c.store.getDevice(c.deviceId))?.rotation).toBeUndefined();
    expect(c.store.operations.size).toBe(2); // pre-register and the first issuance only
  });

  test('the function does not echo an invalid requestId (a 100 kB one) back in its refusal', async () => {
    const c = new Case('echo');
    const { certificateId: principal } = await c.onboard();
    const published: { topic: string; message: Record<string, unknown> }[] = [];
    const handler = createRotationHandler({ lifecycle: c.clean, messenger: { publish: async (topic, message) => void published.push({ topic, message: { ...message } }) }, logger: quiet });
    await handler(ruleMessageOf('rotate', { requestId: 'x'.repeat(100_000), csr: (await makeCsr(c.deviceId)).csrPem }, `devices/${c.deviceId}/certificates/rotate`, { clientId: c.deviceId, principal }));
    expect(published[0]?.message.code).toBe('INVALID_REQUEST');
    expect(String(published[0]?.message.requestId ?? '').length).toBeLessThanOrEqual(64);
  });

});

/* ------------------------------------------------------------------------------------------------------------------
 * 6. The device side (local/cli/rotate.ts), over an in-memory broker: AWS IoT's connect check (the certificate must be
 *    ACTIVE), the two topic rules to the rotation function, its answers back to the device.
 * ---------------------------------------------------------------------------------------------------------------- */

class FakeBroker {
  public readonly clients = new Set<FakeClient>();
  /** While true, commit messages wait in the "queue" (the function is throttled): the device hears nothing. */
  public holdCommits = false;
  public readonly handler: ReturnType<typeof createRotationHandler>;

  public constructor(lifecycle: DeviceLifecycle) {
    this.handler = createRotationHandler({
      lifecycle,
      messenger: {
        publish: async (topic, message) => {
          for (const client of this.clients) if (topic.startsWith(`devices/${client.clientId}/`)) client.emit('message', topic, Buffer.from(JSON.stringify(message)));
        },
      },
      logger: quiet,
    });
  }

  public async connect(clientId: string, certificatePem: string): Promise<FakeClient> {
    const principal = await certificateIdOf(certificatePem);
    const registered = shared.registry.findCertificate(principal);
    if (registered?.status !== 'ACTIVE') throw new Error(`TLS handshake refused: certificate ${principal.slice(0, 12)} is ${registered?.status ?? 'unknown'}`);
    const client = new FakeClient(this, clientId, principal);
    this.clients.add(client);
    return client;
  }
}

class FakeClient extends EventEmitter {
  public constructor(
    private readonly broker: FakeBroker,
    public readonly clientId: string,
    private readonly principal: string,
  ) {
    super();
  }

  public async subscribeAsync(): Promise<void> {}

  public publish(topic: string, message: string, _options: unknown, callback: (error?: Error) => void): void {
    const step = topic.endsWith('/commit') ? 'commit' : 'rotate';
    setImmediate(() => {
      callback();
      if (step === 'commit' && this.broker.holdCommits) return;
      void Promise.resolve(this.broker.handler(ruleMessageOf(step, JSON.parse(message), topic, { clientId: this.clientId, principal: this.principal }))).catch(() => undefined);
    });
  }

  public end(): void {
    this.broker.clients.delete(this);
    this.emit('close');
  }

  public async endAsync(): Promise<void> {
    this.end();
  }
}

describe('the device side: iotcert device rotate (local/cli/rotate.ts)', () => {
  async function deviceDir(c: Case): Promise<{ dir: string; previous: string }> {
    await c.clean.preRegisterDevice({ deviceId: c.deviceId, attributes: {}, actor: ACTOR, requestKey: `pre-${c.deviceId}` });
    const { csrPem, keys } = await makeCsr(c.deviceId);
    // Request keys unique per device: the file's CA is shared and answers one certificate per idempotency token.
    const issued = await c.clean.issueFromCsr({ deviceId: c.deviceId, csrPem, actor: ACTOR, requestKey: `issue-${c.deviceId}` });
    const dir = await mkdtemp(join(tmpdir(), 'rotation-attacks-'));
    await writeFile(join(dir, 'device.key'), await privateKeyPem(keys));
    await writeFile(join(dir, 'device.pem'), issued.certificatePem);
    await writeFile(join(dir, 'ca.pem'), shared.caCertificatePem);
    return { dir, previous: issued.certificateId };
  }

  const target = { host: 'in-memory', port: 0 };

  test('over the in-memory broker the whole protocol runs: committed, device.pem is the new certificate and connects', async () => {
    const c = new Case('cli-ok');
    const broker = new FakeBroker(c.clean);
    mockConnect = (_target, clientId, tls) => broker.connect(clientId, tls.cert);
    const { dir, previous } = await deviceDir(c);
    try {
      const report = await rotateDevice({ deviceId: c.deviceId, dir, target, answerTimeoutMs: 500, attempts: 2 });
      expect(report).toMatchObject({ outcome: 'COMMITTED', retiredCertificateId: previous });
      const current = await certificateIdOf(await readFile(join(dir, 'device.pem'), 'utf8'));
      expect(c.registryStatus(current)).toBe('ACTIVE');
      expect(await c.violations()).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  // At HEAD (dc1be35) this stranded the device (device.pem the withdrawn certificate, the working one unused in
  // previous.pem, every run INCOMPLETE); the uncommitted rollBackIfRefused in local/cli/rotate.ts makes it hold.
  test('a device whose commit did not get through before the deadline goes back to its previous certificate (docs/rotation.md rule 6)', async () => {
    const c = new Case('cli-stranded');
    const broker = new FakeBroker(c.clean);
    mockConnect = (_target, clientId, tls) => broker.connect(clientId, tls.cert);
    const { dir, previous } = await deviceDir(c);
    try {
      // The new certificate connects (promoted), but the commit is held up (the rotation function throttled, say).
      broker.holdCommits = true;
      const first = await rotateDevice({ deviceId: c.deviceId, dir, target, answerTimeoutMs: 800, attempts: 1 });
      expect(first).toMatchObject({ outcome: 'INCOMPLETE', phase: 'PROMOTED' });
      // The deadline passes; the sweep withdraws the new certificate. The previous one is still ACTIVE in AWS IoT.
      broker.holdCommits = false;
      c.pastDeadline();
      await c.sweepUntilClean();
      expect(c.registryStatus(previous)).toBe('ACTIVE');
      // The device runs the rotation again, as the CLI tells it to.
      const second = await rotateDevice({ deviceId: c.deviceId, dir, target, answerTimeoutMs: 800, attempts: 1 });
      const current = await certificateIdOf(await readFile(join(dir, 'device.pem'), 'utf8'));
      // docs/rotation.md rule 6: back to the old certificate when the new one is refused at connect or on CERTIFICATE_WITHDRAWN.
      expect({ outcome: second.outcome, deviceCertificate: c.registryStatus(current) }).toEqual({ outcome: 'ROLLED_BACK', deviceCertificate: 'ACTIVE' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
