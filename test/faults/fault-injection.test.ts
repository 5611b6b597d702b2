/**
 * Fault injection on DynamoDB Local: every call the lifecycle makes to its ports (store, registry, CA) is
 * counted, and for each flow and each call k one fault is injected at call k, in three modes:
 *  - `throw`:     UPSTREAM_FAILURE before the call (nothing happened);
 *  - `throttle`:  UPSTREAM_THROTTLED (retryable) before the call (nothing happened);
 *  - `ambiguous`: the call is made, then UPSTREAM_FAILURE is answered (it happened, the caller cannot know).
 * The same request (same requestKey / deliveryId) is then retried without faults until it gives a final answer,
 * and the result is compared with the same flow run without any fault: a transient fault must never change the
 * outcome, leave the systems disagreeing, hand out an unusable certificate, issue twice, or write the audit
 * trail twice (or not at all).
 *
 * Every case runs on its own device, its own clock and its own proxied ports (over the shared store, registry and
 * CA), so cases of one (flow, mode) run a few at a time. No wall-time sleeps: leases are passed by advancing the
 * case's TestClock.
 */
import { DeviceLifecycle, type LifecycleSettings, type RegistrationEvent, type RegistrationOutcome } from '../../functions/core/lifecycle';
import { LifecycleError, UpstreamError } from '../../functions/core/errors';
import type { CertificateAuthority, DeviceRegistry, DeviceStore } from '../../functions/core/ports';
import type { AuditEvent } from '../../functions/core/model';
import { operationIdOf } from '../../functions/core/operations';
import { inspectCertificate } from '../../functions/core/x509';
import { createTestTable, type TestTable } from '../support/dynamodb';
import { createLifecycleFixture, TestClock, type LifecycleFixture } from '../support/lifecycle-fixture';
import { deviceViolations, registryCertificatesOf, usableCertificateIds, type FleetView } from '../support/invariants';
import { makeCsr } from '../support/pki';
import type { DynamoDbDeviceStore } from '../../functions/adapters/aws/dynamodb-device-store';
import { inBatches } from '../support/in-batches';

type Mode = 'throw' | 'throttle' | 'ambiguous';
const MODES: readonly Mode[] = ['throw', 'throttle', 'ambiguous'];

/** Answers that are not final: the client retries the same request. */
const TRANSIENT_CODES = new Set(['UPSTREAM_THROTTLED', 'UPSTREAM_FAILURE', 'CONFLICT', 'REQUEST_IN_PROGRESS']);
const MAX_RETRIES = 5;
/** How many cases of one (flow, mode) run at once (each on its own device, clock and ports). */
const CONCURRENCY = 4;
const ACTOR = 'arn:aws:iam::123456789012:user/fault-injector';

/* ----------------------------------------------------------------------------------------------------------------
 * Ports that fail on purpose.
 * -------------------------------------------------------------------------------------------------------------- */

class FaultPlan {
  public calls = 0;
  public faultAt = Number.POSITIVE_INFINITY;
  public mode: Mode = 'throw';
  /** The call that got the fault, e.g. `#7 store.commit`. */
  public injected: string | undefined;
  /** Every call, in order: `store.commit`, `registry.attachCertificate`, ... */
  public readonly log: string[] = [];
  /** Every certificate the CA handed out during the request (including on an ambiguous failure). */
  public readonly issuedPems: string[] = [];

  public arm(k: number, mode: Mode): void {
    this.calls = 0;
    this.log.length = 0;
    this.faultAt = k;
    this.mode = mode;
    this.injected = undefined;
    this.issuedPems.length = 0;
  }

  public disarm(): void {
    this.faultAt = Number.POSITIVE_INFINITY;
  }
}

function faulty<T extends object>(target: T, portName: string, plan: FaultPlan): T {
  return new Proxy(target, {
    get(object, property) {
      const value: unknown = Reflect.get(object, property, object);
      if (typeof value !== 'function' || typeof property === 'symbol') return value;
      const method = value as (...args: unknown[]) => unknown;
      return (...args: unknown[]): unknown => {
        plan.calls += 1;
        const label = `${portName}.${property}`;
        plan.log.push(label);
        const capture = (result: unknown): unknown => {
          if (portName === 'ca' && property === 'issueCertificate') plan.issuedPems.push((result as { certificatePem: string }).certificatePem);
          return result;
        };
        if (plan.calls !== plan.faultAt) {
          const result = method.apply(object, args);
          return result instanceof Promise ? result.then(capture) : result;
        }
        plan.injected = `#${plan.calls} ${label}`;
        switch (plan.mode) {
          case 'throw':
            return Promise.reject(new UpstreamError('UPSTREAM_FAILURE', `injected: ${label} failed before it was made`, false));
          case 'throttle':
            return Promise.reject(new UpstreamError('UPSTREAM_THROTTLED', `injected: ${label} throttled`, true));
          case 'ambiguous':
            // The call is made; whatever it answered is lost (a timeout after the write).
            return Promise.resolve(method.apply(object, args)).then(
              (result) => {
                capture(result);
                throw new UpstreamError('UPSTREAM_FAILURE', `injected: ${label} was made but its answer was lost`, true);
              },
              () => {
                throw new UpstreamError('UPSTREAM_FAILURE', `injected: ${label} was made (and failed) but its answer was lost`, true);
              },
            );
        }
      };
    },
  });
}

/* ----------------------------------------------------------------------------------------------------------------
 * One case: a device, a lifecycle over faulty ports, a clock of its own.
 * -------------------------------------------------------------------------------------------------------------- */

interface Shared {
  readonly fixture: LifecycleFixture<DynamoDbDeviceStore>;
  readonly table: TestTable;
}

class Case {
  public readonly plan = new FaultPlan();
  public readonly clock: TestClock;
  public readonly lifecycle: DeviceLifecycle;
  public readonly fleet: FleetView;

  public constructor(
    public readonly shared: Shared,
    public readonly deviceId: string,
    settings: Partial<LifecycleSettings>,
  ) {
    this.clock = new TestClock(new Date(shared.fixture.clock.now().getTime()));
    let counter = 0;
    this.lifecycle = new DeviceLifecycle(
      {
        store: faulty<DeviceStore>(shared.table.store, 'store', this.plan),
        registry: faulty<DeviceRegistry>(shared.fixture.registry, 'registry', this.plan),
        ca: faulty<CertificateAuthority>(shared.fixture.ca, 'ca', this.plan),
        clock: this.clock,
        ids: { next: () => `${deviceId}-${(counter += 1).toString().padStart(6, '0')}` },
      },
      settings,
    );
    this.fleet = { store: shared.table.store, registry: shared.fixture.registry, ca: shared.fixture.ca, clock: this.clock };
  }

  public key(name: string): string {
    return `${this.deviceId}:${name}`;
  }

  /** A fault-free command of the set-up. */
  public async issue(requestName: string): Promise<string> {
    const { csrPem } = await makeCsr(this.deviceId);
    const issued = await this.lifecycle.issueFromCsr({ deviceId: this.deviceId, csrPem, actor: ACTOR, requestKey: this.key(requestName) });
    return issued.certificateId;
  }

  public preRegister(requestName = 'pre-register'): Promise<unknown> {
    return this.lifecycle.preRegisterDevice({ deviceId: this.deviceId, attributes: { line: 'fault' }, actor: ACTOR, requestKey: this.key(requestName) });
  }

  public async jitrConnect(): Promise<RegistrationEvent> {
    return this.shared.fixture.firstConnect(await this.shared.fixture.mintCertificate(this.deviceId));
  }
}

/** What one attempt of the request answered, normalized over commands and JITR. */
type Answer = { readonly ok: true; readonly summary: string; readonly certificateId?: string } | { readonly ok: false; readonly code: string; readonly message: string };

const describeAnswer = (answer: Answer): string => (answer.ok ? `ok ${answer.summary}` : `${answer.code}: ${answer.message}`);
const sameAnswer = (a: Answer, b: Answer): boolean => (a.ok && b.ok ? a.summary === b.summary : !a.ok && !b.ok && a.code === b.code);

function jitrAnswer(outcome: RegistrationOutcome): Answer {
  switch (outcome.outcome) {
    case 'ACTIVATED':
      return { ok: true, summary: 'certificate ACTIVE', certificateId: outcome.certificateId };
    case 'ALREADY_PROCESSED':
      return outcome.status === 'ACTIVE' ? { ok: true, summary: 'certificate ACTIVE', certificateId: outcome.certificateId } : { ok: false, code: `JITR_ALREADY_${outcome.status}`, message: JSON.stringify(outcome) };
    case 'IN_PROGRESS':
      return { ok: false, code: 'REQUEST_IN_PROGRESS', message: 'JITR answered IN_PROGRESS' };
    default:
      return { ok: false, code: `JITR_${outcome.outcome}`, message: JSON.stringify(outcome) };
  }
}

interface Flow<C = unknown> {
  readonly name: string;
  readonly settings?: Partial<LifecycleSettings>;
  /** JITR keeps no operation record (the certificate record is its claim). */
  readonly jitr?: boolean;
  setup(c: Case): Promise<C>;
  run(c: Case, context: C): Promise<Answer>;
}

const flow = <C>(definition: Flow<C>): Flow => definition as unknown as Flow;

const FLOWS: readonly Flow[] = [
  flow({
    name: 'pre-register a device',
    setup: async () => undefined,
    run: async (c) => {
      const device = (await c.preRegister('the-request')) as { status: string };
      return { ok: true, summary: `device ${device.status}` };
    },
  }),
  flow({
    name: 'issue from a CSR (device REGISTERED)',
    setup: async (c) => {
      await c.preRegister();
      return { csrPem: (await makeCsr(c.deviceId)).csrPem };
    },
    run: async (c, { csrPem }) => {
      const issued = await c.lifecycle.issueFromCsr({ deviceId: c.deviceId, csrPem, actor: ACTOR, requestKey: c.key('the-request') });
      return { ok: true, summary: 'certificate issued', certificateId: issued.certificateId };
    },
  }),
  flow({
    name: 'issue from a CSR (device ACTIVE)',
    setup: async (c) => {
      await c.preRegister();
      await c.issue('first-certificate');
      return { csrPem: (await makeCsr(c.deviceId)).csrPem };
    },
    run: async (c, { csrPem }) => {
      const issued = await c.lifecycle.issueFromCsr({ deviceId: c.deviceId, csrPem, actor: ACTOR, requestKey: c.key('the-request') });
      return { ok: true, summary: 'certificate issued', certificateId: issued.certificateId };
    },
  }),
  flow({
    name: 'revoke a certificate',
    setup: async (c) => {
      await c.preRegister();
      return { certificateId: await c.issue('to-revoke') };
    },
    run: async (c, { certificateId }) => {
      const revoked = await c.lifecycle.revokeCertificate({ deviceId: c.deviceId, certificateId, reason: 'KEY_COMPROMISE', actor: ACTOR, requestKey: c.key('the-request') });
      return { ok: true, summary: `certificate ${revoked.status}` };
    },
  }),
  flow({
    name: 'revoke a device with 3 certificates',
    setup: async (c) => {
      await c.preRegister();
      for (const n of [1, 2, 3]) await c.issue(`certificate-${n}`);
    },
    run: async (c) => {
      const device = await c.lifecycle.revokeDevice({ deviceId: c.deviceId, reason: 'KEY_COMPROMISE', actor: ACTOR, requestKey: c.key('the-request') });
      return { ok: true, summary: `device ${device.status}` };
    },
  }),
  flow({
    name: 'suspend a device with 3 certificates',
    setup: async (c) => {
      await c.preRegister();
      for (const n of [1, 2, 3]) await c.issue(`certificate-${n}`);
    },
    run: async (c) => {
      const device = await c.lifecycle.suspendDevice({ deviceId: c.deviceId, actor: ACTOR, requestKey: c.key('the-request') });
      return { ok: true, summary: `device ${device.status}` };
    },
  }),
  flow({
    name: 'resume a suspended device with 3 certificates',
    setup: async (c) => {
      await c.preRegister();
      for (const n of [1, 2, 3]) await c.issue(`certificate-${n}`);
      await c.lifecycle.suspendDevice({ deviceId: c.deviceId, actor: ACTOR, requestKey: c.key('suspend') });
    },
    run: async (c) => {
      const device = await c.lifecycle.resumeDevice({ deviceId: c.deviceId, actor: ACTOR, requestKey: c.key('the-request') });
      return { ok: true, summary: `device ${device.status}` };
    },
  }),
  flow({
    name: 'JITR first connect (open policy)',
    jitr: true,
    setup: async (c) => ({ event: await c.jitrConnect() }),
    run: async (c, { event }) => jitrAnswer(await c.lifecycle.registerOnFirstConnect(event, { deliveryId: c.key('delivery') })),
  }),
  flow({
    name: 'JITR connect first, pre-registered afterwards (preregistered policy)',
    settings: { enrollmentPolicy: 'preregistered' },
    setup: async (c) => {
      const event = await c.jitrConnect();
      const outcome = await c.lifecycle.registerOnFirstConnect(event, { deliveryId: c.key('delivery') });
      if (outcome.outcome !== 'AWAITING_PRE_REGISTRATION') throw new Error(`set-up: expected AWAITING_PRE_REGISTRATION, got ${JSON.stringify(outcome)}`);
      return { certificateId: event.certificateId };
    },
    run: async (c, { certificateId }) => {
      const device = (await c.preRegister('the-request')) as { status: string };
      // The point of this flow: the certificate that connected first ends up usable.
      const registered = c.shared.fixture.registry.findCertificate(certificateId);
      return { ok: true, summary: `device ${device.status}, waiting certificate ${registered?.status ?? 'unregistered'} in the registry` };
    },
  }),
];

/* ----------------------------------------------------------------------------------------------------------------
 * Running one request to its final answer, and what is checked.
 * -------------------------------------------------------------------------------------------------------------- */

async function attempt(c: Case, f: Flow, context: unknown): Promise<Answer> {
  try {
    return await f.run(c, context);
  } catch (error) {
    if (error instanceof LifecycleError) return { ok: false, code: error.code, message: error.message };
    return { ok: false, code: 'NOT_A_LIFECYCLE_ERROR', message: error instanceof Error ? `${error.name}: ${error.message}` : String(error) };
  }
}

const isFinal = (answer: Answer): boolean => answer.ok || !TRANSIENT_CODES.has(answer.code);

const eventSignature = (event: AuditEvent): string => `${event.type}(${event.fromStatus ?? '∅'}→${event.toStatus ?? '∅'})`;

async function allEvents(c: Case): Promise<AuditEvent[]> {
  return [...((await c.fleet.store.getDeviceView(c.deviceId, 1000))?.events ?? [])];
}

/** What the request changed, in a form that does not depend on ids: compared with the fault-free run. */
interface Effect {
  readonly answer: Answer;
  readonly newEvents: string[];
  readonly endState: string;
  readonly usableDelta: number;
  readonly callLog: readonly string[];
}

async function endStateOf(c: Case): Promise<string> {
  const device = await c.fleet.store.getDevice(c.deviceId);
  const records = (await c.fleet.store.listDeviceCertificates(c.deviceId)).map((r) => `${r.source}:${r.status}`).sort();
  const registry = (await registryCertificatesOf(c.fleet, c.deviceId)).map((r) => r.status).sort();
  const attached = c.fleet.registry.findThing(c.deviceId)?.principals.length ?? 0;
  return `device ${device?.status ?? 'none'}; records [${records.join(', ')}]; registry [${registry.join(', ')}]; attached ${attached}`;
}

interface CaseResult {
  readonly effect?: Effect;
  readonly violations: string[];
  readonly injected?: string;
  /** How many fault-free retries the request needed to give its final answer. */
  readonly retries?: number;
}

/**
 * Sets up a fresh device without faults, runs the request with a fault at call `k` (none when `k` is undefined),
 * retries it without faults to its final answer, and checks everything; `baseline` is the fault-free effect.
 */
async function runCase(shared: Shared, f: Flow, deviceId: string, fault: { k: number; mode: Mode } | undefined, baseline: Effect | undefined): Promise<CaseResult> {
  const c = new Case(shared, deviceId, f.settings ?? {});
  const violations: string[] = [];
  const problem = (message: string): void => {
    violations.push(message);
  };
  let context: unknown;
  try {
    context = await f.setup(c);
  } catch (error) {
    return { violations: [`set-up failed (no fault armed): ${String(error)}`] };
  }
  const eventsBefore = new Set((await allEvents(c)).map((e) => e.eventId));
  const usableBefore = new Set(await usableCertificateIds(c.fleet, deviceId));
  // Certificates the device had on record before the request: making one of them usable again (a resume) is no issuance.
  const knownBefore = new Set((await c.fleet.store.listDeviceCertificates(deviceId)).filter((r) => r.status === 'INACTIVE').map((r) => r.certificateId));

  // Every success must carry a certificate that is usable right then.
  const checkSuccess = async (answer: Answer, when: string): Promise<void> => {
    if (!answer.ok || answer.certificateId === undefined) return;
    const registered = c.fleet.registry.findCertificate(answer.certificateId);
    if (registered?.status !== 'ACTIVE') problem(`${when}: success carries certificate ${answer.certificateId.slice(0, 12)} which is ${registered?.status ?? 'not registered'} in the registry`);
    if (registered && (await c.fleet.ca.isRevoked((await inspectCertificate(registered.certificatePem)).serialNumber))) {
      problem(`${when}: success carries certificate ${answer.certificateId.slice(0, 12)} which is revoked at the CA`);
    }
  };

  if (fault) c.plan.arm(fault.k, fault.mode);
  else c.plan.arm(Number.POSITIVE_INFINITY, 'throw');
  const answers: Answer[] = [];
  let answer = await attempt(c, f, context);
  const callLog = [...c.plan.log];
  const injected = c.plan.injected;
  c.plan.disarm();
  answers.push(answer);
  await checkSuccess(answer, 'faulted attempt');
  let retries = 0;
  while (!isFinal(answer)) {
    if (retries >= MAX_RETRIES) {
      problem(`did not converge within ${MAX_RETRIES} retries; answers: ${answers.map(describeAnswer).join(' | ')}`);
      break;
    }
    if (!answer.ok && answer.code === 'REQUEST_IN_PROGRESS') c.clock.advance(61_000);
    retries += 1;
    answer = await attempt(c, f, context);
    answers.push(answer);
    await checkSuccess(answer, `retry ${retries}`);
  }
  if (!answer.ok && answer.code === 'NOT_A_LIFECYCLE_ERROR') problem(`final answer is not a LifecycleError: ${answer.message}`);

  const events = (await allEvents(c)).filter((e) => !eventsBefore.has(e.eventId));
  const usableAfter = await usableCertificateIds(c.fleet, deviceId);
  const newlyUsable = usableAfter.filter((id) => !usableBefore.has(id) && !knownBefore.has(id));
  const effect: Effect = {
    answer,
    newEvents: events.map(eventSignature).sort(),
    endState: await endStateOf(c),
    usableDelta: usableAfter.length - usableBefore.size,
    callLog,
  };

  // At most one certificate per request key: of what the CA issued for this request, at most one is not revoked,
  // and that one is the certificate of the success answer, ACTIVE in the registry and on record.
  const issuedIds = new Map<string, string>();
  for (const pem of c.plan.issuedPems) {
    const facts = await inspectCertificate(pem);
    issuedIds.set(facts.certificateId, facts.serialNumber);
  }
  const notRevoked: string[] = [];
  for (const [certificateId, serial] of issuedIds) if (!(await c.fleet.ca.isRevoked(serial))) notRevoked.push(certificateId);
  if (notRevoked.length > 1) problem(`the CA issued ${notRevoked.length} unrevoked certificates for one request key: ${notRevoked.map((id) => id.slice(0, 12)).join(', ')}`);
  for (const certificateId of notRevoked) {
    const record = await c.fleet.store.getCertificate(certificateId);
    const registered = c.fleet.registry.findCertificate(certificateId);
    if (!(answer.ok && answer.certificateId === certificateId) || record?.status !== 'ACTIVE' || registered?.status !== 'ACTIVE') {
      problem(
        `certificate ${certificateId.slice(0, 12)} issued by the CA for this request is not revoked, but the final answer is "${describeAnswer(answer)}", its record is ${record?.status ?? 'missing'} and the registry has it ${registered?.status ?? 'unregistered'} (an orphan certificate a JITR-enabled CA would let enroll)`,
      );
    }
  }
  if (newlyUsable.length > 1) problem(`${newlyUsable.length} certificates became usable through this one request (at most one per request key): ${newlyUsable.map((id) => id.slice(0, 12)).join(', ')}`);

  for (const violation of await deviceViolations(c.fleet, deviceId)) problem(`invariant: ${violation}`);

  // The request's operation record is finished: DONE for a success, never left PENDING (holding a lease) after a final answer.
  if (!f.jitr) {
    const operation = await c.fleet.store.getOperation(operationIdOf(ACTOR, c.key('the-request')));
    if (answer.ok && operation?.status !== 'DONE') problem(`the request succeeded but its operation record is ${operation?.status ?? 'missing'}`);
    if (!answer.ok && operation?.status === 'PENDING') problem(`the request got its final answer (${answer.code}) but its operation record is still PENDING`);
  }

  // The same request answered again (a client retrying after a lost response) changes nothing and answers the same.
  const replayed = await attempt(c, f, context);
  if (!sameAnswer(replayed, answer) || (answer.ok && replayed.ok && replayed.certificateId !== answer.certificateId)) {
    problem(`replay of the finished request answers "${describeAnswer(replayed)}" instead of "${describeAnswer(answer)}"`);
  }
  const afterReplay = (await allEvents(c)).filter((e) => !eventsBefore.has(e.eventId));
  if (afterReplay.length !== events.length) problem(`replay of the finished request wrote ${afterReplay.length - events.length} more audit events: ${afterReplay.slice(0, afterReplay.length - events.length).map(eventSignature).join(', ')}`);

  if (baseline) {
    if (!sameAnswer(answer, baseline.answer)) problem(`final answer "${describeAnswer(answer)}" differs from the fault-free run's "${describeAnswer(baseline.answer)}" (answers: ${answers.map(describeAnswer).join(' | ')})`);
    if (effect.newEvents.join(',') !== baseline.newEvents.join(',')) {
      problem(`audit events ${JSON.stringify(effect.newEvents)} differ from the fault-free run's ${JSON.stringify(baseline.newEvents)} (one event per real change)`);
    }
    if (effect.endState !== baseline.endState) problem(`end state "${effect.endState}" differs from the fault-free run's "${baseline.endState}"`);
    if (effect.usableDelta !== baseline.usableDelta) problem(`usable certificates changed by ${effect.usableDelta}, the fault-free run by ${baseline.usableDelta}`);
  }
  return { effect, violations, injected, retries };
}

/* ----------------------------------------------------------------------------------------------------------------
 * The suite.
 * -------------------------------------------------------------------------------------------------------------- */

let totalFaults = 0;
const faultsByFlow: string[] = [];
let runId = 0;
const slug = (name: string): string => name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40);

afterAll(() => {
  process.stdout.write(`\nfault injection: ${totalFaults} faults injected in total\n${faultsByFlow.map((line) => `  ${line}`).join('\n')}\n`);
});

describe.each(FLOWS.map((f) => [f.name, f] as const))('fault injection: %s', (_name, f) => {
  let shared: Shared;
  let baseline: Effect;

  beforeAll(async () => {
    const table = await createTestTable();
    const fixture = await createLifecycleFixture(f.settings ?? {}, table.store);
    shared = { fixture, table };
    runId += 1;
    const result = await runCase(shared, f, `${slug(f.name)}-base-${runId}`, undefined, undefined);
    if (!result.effect || result.violations.length > 0) throw new Error(`the fault-free run is already wrong:\n${result.violations.join('\n')}`);
    baseline = result.effect;
  }, 120_000);

  afterAll(async () => {
    await shared?.table.drop();
  });

  test('the fault-free run succeeds', () => {
    faultsByFlow.push(`${f.name}: fault-free calls ${baseline.callLog.map((call, i) => `${i + 1}:${call}`).join(' ')}`);
    expect(baseline.answer.ok).toBe(true);
    expect(baseline.callLog.length).toBeGreaterThan(0);
  });

  test.each(MODES)('every call k fails once (%s): the retried request converges to the fault-free outcome', async (mode) => {
    const n = baseline.callLog.length;
    const ks = Array.from({ length: n }, (_, i) => i + 1);
    const results = await inBatches(ks, CONCURRENCY, (k) => runCase(shared, f, `${slug(f.name)}-${mode}-${k}-${runId}`, { k, mode }, baseline));
    const injected = results.filter((r) => r.injected !== undefined).length;
    totalFaults += injected;
    const retryCounts = results.map((r) => r.retries ?? 0);
    const histogram = [...new Set(retryCounts)].sort().map((r) => `${retryCounts.filter((x) => x === r).length}×${r}`).join(' ');
    const violating = results.filter((r) => r.violations.length > 0).length;
    faultsByFlow.push(`${f.name} / ${mode}: ${injected} faults injected (calls 1..${n}); retries needed: ${histogram}; cases with violations: ${violating}`);
    const failures = results.flatMap((result, index) =>
      result.violations.map((v) => `k=${index + 1}/${n} (${result.injected ?? `no fault injected; expected at ${baseline.callLog[index]}`}): ${v}`),
    );
    expect(injected).toBe(n);
    expect(failures).toEqual([]);
  }, 600_000);
});
