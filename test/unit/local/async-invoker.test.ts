import { AsyncInvoker } from '../../../local/async-invoker';

const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

interface Event {
  readonly id: string;
}

function invoker(handler: (event: Event) => Promise<string>, overrides: { concurrency?: number; retryDelaysMs?: number[] } = {}) {
  const results: string[] = [];
  const failures: { id: string; error: string; attempts: number }[] = [];
  const instance = new AsyncInvoker<Event, string>({
    handler,
    concurrency: overrides.concurrency ?? 2,
    retryDelaysMs: overrides.retryDelaysMs ?? [10, 20],
    keyOf: (event) => event.id,
    onResult: (_event, result) => results.push(result),
    onFailure: async (event, error, attempts) => {
      failures.push({ id: event.id, error: (error as Error).message, attempts });
    },
  });
  return { instance, results, failures };
}

describe('AsyncInvoker (Lambda asynchronous invocation semantics)', () => {
  test('runs at most `concurrency` handlers at once and handles every event', async () => {
    let running = 0;
    let peak = 0;
    const { instance, results } = invoker(async (event) => {
      running += 1;
      peak = Math.max(peak, running);
      await tick(5);
      running -= 1;
      return event.id;
    });

    for (let index = 0; index < 10; index += 1) instance.invoke({ id: `e${index}` });
    expect(await instance.drain(5_000)).toBe(true);

    expect(peak).toBe(2);
    expect(results.sort()).toEqual(Array.from({ length: 10 }, (_, index) => `e${index}`).sort());
  });

  test('does not queue an event whose key is already queued or running', async () => {
    const { instance, results } = invoker(async (event) => {
      await tick(5);
      return event.id;
    });

    const accepted = [instance.invoke({ id: 'same' }), instance.invoke({ id: 'same' })];
    await instance.drain(1_000);
    const afterwards = instance.invoke({ id: 'same' });
    await instance.drain(1_000);

    expect(accepted).toEqual([true, false]);
    expect(afterwards).toBe(true);
    expect(results).toEqual(['same', 'same']);
  });

  test('retries a failing invocation twice, then hands it to the on-failure destination', async () => {
    let calls = 0;
    const { instance, failures } = invoker(async () => {
      calls += 1;
      throw new Error(`failure ${calls}`);
    });

    instance.invoke({ id: 'bad' });
    await tick(100);

    expect(calls).toBe(3);
    expect(failures).toEqual([{ id: 'bad', error: 'failure 3', attempts: 3 }]);
    expect(instance.pending).toBe(0);
  });

  test('succeeds on a retry without reaching the on-failure destination', async () => {
    let calls = 0;
    const { instance, results, failures } = invoker(async () => {
      calls += 1;
      if (calls === 1) throw new Error('throttled');
      return 'done';
    });

    instance.invoke({ id: 'flaky' });
    await tick(50);

    expect(results).toEqual(['done']);
    expect(failures).toEqual([]);
  });

  test('drain runs the retries waiting for their delay at once', async () => {
    let calls = 0;
    const { instance, results } = invoker(
      async () => {
        calls += 1;
        if (calls === 1) throw new Error('first fails');
        return 'done';
      },
      { retryDelaysMs: [60_000, 60_000] },
    );

    instance.invoke({ id: 'slow-retry' });
    await tick(5);
    const drained = await instance.drain(1_000);

    expect(drained).toBe(true);
    expect(results).toEqual(['done']);
  });

  test('delivers again after the redelivery delay an event answered "not yet", until it is done', async () => {
    // Prepare: the first two deliveries find the work held by another delivery.
    const answers = ['IN_PROGRESS', 'IN_PROGRESS', 'ACTIVATED'];
    const redeliveries: number[] = [];
    const results: string[] = [];
    const instance = new AsyncInvoker<Event, string>({
      handler: async () => answers.shift() ?? 'ACTIVATED',
      concurrency: 1,
      keyOf: (event) => event.id,
      redeliverWhen: (result) => result === 'IN_PROGRESS',
      redeliveryDelayMs: 20,
      onRedelivery: (_event, _result, redelivery) => redeliveries.push(redelivery),
      onResult: (_event, result) => results.push(result),
      onFailure: async () => undefined,
    });

    // Act
    instance.invoke({ id: 'held' });
    await tick(5);
    const pendingWhileHeld = instance.pending;
    const duplicateAccepted = instance.invoke({ id: 'held' });
    await tick(100);

    // Assess: still pending (so not queued twice) while held, then done on the third delivery.
    expect(pendingWhileHeld).toBe(1);
    expect(duplicateAccepted).toBe(false);
    expect(redeliveries).toEqual([1, 2]);
    expect(results).toEqual(['ACTIVATED']);
    expect(instance.pending).toBe(0);
  });

  test('hands an event still "not yet" after its redeliveries to the on-failure destination', async () => {
    const failures: { error: string; attempts: number }[] = [];
    const instance = new AsyncInvoker<Event, string>({
      handler: async () => 'IN_PROGRESS',
      concurrency: 1,
      keyOf: (event) => event.id,
      redeliverWhen: (result) => result === 'IN_PROGRESS',
      redeliveryDelayMs: 5,
      maxRedeliveries: 2,
      onFailure: async (_event, error, attempts) => void failures.push({ error: (error as Error).message, attempts }),
    });

    instance.invoke({ id: 'stuck' });
    await tick(100);

    expect(failures).toEqual([{ error: 'still not done after 2 redeliveries', attempts: 3 }]);
    expect(instance.pending).toBe(0);
  });

  test('drain lets go of events waiting for a redelivery instead of spinning on them', async () => {
    let calls = 0;
    const instance = new AsyncInvoker<Event, string>({
      handler: async () => {
        calls += 1;
        return 'IN_PROGRESS';
      },
      concurrency: 1,
      keyOf: (event) => event.id,
      redeliverWhen: (result) => result === 'IN_PROGRESS',
      redeliveryDelayMs: 60_000,
      onFailure: async () => undefined,
    });
    instance.invoke({ id: 'held' });
    await tick(5);

    const drained = await instance.drain(1_000);

    expect(drained).toBe(true);
    expect(calls).toBe(1);
    expect(instance.pending).toBe(0);
  });

  test('drain answers false when the deliveries outlast its timeout', async () => {
    const { instance } = invoker(() => new Promise((resolve) => setTimeout(() => resolve('late'), 200)));

    instance.invoke({ id: 'long' });

    expect(await instance.drain(20)).toBe(false);
    expect(await instance.drain(1_000)).toBe(true);
  });
});
