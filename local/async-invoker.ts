/**
 * What an asynchronous Lambda invocation gives an IoT rule action, on one machine: the event is
 * queued and handled later by the function (at most `concurrency` at once), a failed invocation is
 * retried twice with a delay, and one that still fails goes to the on-failure destination.
 *
 * A result can also mean "not yet" (`redeliverWhen`): the event is then handed to the function again
 * after a delay, the way SQS hands back a record the function reported as failed once its visibility
 * timeout has passed (in AWS the JITR function reads the events from a queue).
 */
export interface AsyncInvokerOptions<E, R> {
  readonly handler: (event: E) => Promise<R>;
  readonly concurrency: number;
  /** One delay per retry; Lambda retries an asynchronous invocation twice. @default [1000, 2000] */
  readonly retryDelaysMs?: readonly number[];
  /** Events with the same key are not queued twice while one is waiting or running (redeliveries of the same event). */
  readonly keyOf: (event: E) => string;
  /** A result that means the event must be delivered again later (e.g. another delivery holds its work). @default never */
  readonly redeliverWhen?: (result: R) => boolean;
  /** How long such an event waits before it is delivered again. @default 5000 */
  readonly redeliveryDelayMs?: number;
  /** How many times such an event is delivered again before it goes to the on-failure destination. @default 20 */
  readonly maxRedeliveries?: number;
  readonly onResult?: (event: E, result: R, attempt: number) => void;
  readonly onRetry?: (event: E, error: unknown, attempt: number, delayMs: number) => void;
  /** Told of each redelivery scheduled for a "not yet" result. */
  readonly onRedelivery?: (event: E, result: R, redelivery: number, delayMs: number) => void;
  /** The on-failure destination: called once the retries (or the redeliveries) are spent. */
  readonly onFailure: (event: E, error: unknown, attempts: number) => Promise<void>;
}

interface Job<E> {
  readonly key: string;
  readonly event: E;
  attempt: number;
  /** How many times a "not yet" result sent it back. */
  redeliveries: number;
  timer?: NodeJS.Timeout;
}

export class RedeliveriesExhaustedError extends Error {
  public constructor(redeliveries: number) {
    super(`still not done after ${redeliveries} redeliveries`);
    this.name = 'RedeliveriesExhaustedError';
  }
}

export class AsyncInvoker<E, R> {
  private readonly queue: Job<E>[] = [];
  private readonly waiting = new Map<string, Job<E>>();
  /** Jobs waiting for the delay of a retry after an error. */
  private readonly retrying = new Set<Job<E>>();
  /** Jobs waiting for the delay of a redelivery after a "not yet" result. */
  private readonly redelivering = new Set<Job<E>>();
  private running = 0;
  private hurry = false;
  private idleWaiters: (() => void)[] = [];
  private readonly retryDelaysMs: readonly number[];

  public constructor(private readonly options: AsyncInvokerOptions<E, R>) {
    this.retryDelaysMs = options.retryDelaysMs ?? [1000, 2000];
  }

  /** Queues the event; `false` when an event with the same key is already queued, running or waiting to retry. */
  public invoke(event: E): boolean {
    const key = this.options.keyOf(event);
    if (this.waiting.has(key)) return false;
    const job: Job<E> = { key, event, attempt: 1, redeliveries: 0 };
    this.waiting.set(key, job);
    this.queue.push(job);
    this.pump();
    return true;
  }

  public isPending(key: string): boolean {
    return this.waiting.has(key);
  }

  /** Events queued, running or waiting for a retry or a redelivery. */
  public get pending(): number {
    return this.waiting.size;
  }

  /**
   * Resolves when nothing is queued, running or waiting to retry. Retries waiting for their delay
   * run at once: used on shutdown, so in-flight deliveries finish instead of being dropped. Events
   * waiting for a redelivery are let go (waiting on another delivery's work would only spin; the
   * local mode delivers them again at its next start), and so is an event answered "not yet" from now on.
   * Resolves `false` if `timeoutMs` passes first.
   */
  public async drain(timeoutMs: number): Promise<boolean> {
    this.hurry = true;
    for (const job of this.retrying) {
      clearTimeout(job.timer);
      this.retrying.delete(job);
      this.queue.push(job);
    }
    for (const job of this.redelivering) {
      clearTimeout(job.timer);
      this.redelivering.delete(job);
      this.waiting.delete(job.key);
    }
    this.pump();
    if (this.waiting.size === 0) {
      this.notifyIdle();
      return true;
    }
    let timer: NodeJS.Timeout | undefined;
    const idle = new Promise<boolean>((resolve) => this.idleWaiters.push(() => resolve(true)));
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    try {
      return await Promise.race([idle, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private pump(): void {
    while (this.running < this.options.concurrency) {
      const job = this.queue.shift();
      if (!job) break;
      this.running += 1;
      void this.run(job).finally(() => {
        this.running -= 1;
        this.pump();
        if (this.waiting.size === 0) this.notifyIdle();
      });
    }
  }

  private notifyIdle(): void {
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  private async run(job: Job<E>): Promise<void> {
    let result: R;
    try {
      result = await this.options.handler(job.event);
    } catch (error) {
      await this.retryAfterError(job, error);
      return;
    }
    if (this.options.redeliverWhen?.(result) && !this.hurry) {
      await this.redeliverLater(job, result);
      return;
    }
    this.waiting.delete(job.key);
    this.options.onResult?.(job.event, result, job.attempt);
  }

  private async retryAfterError(job: Job<E>, error: unknown): Promise<void> {
    const delay = this.retryDelaysMs[job.attempt - 1];
    if (delay === undefined) {
      this.waiting.delete(job.key);
      await this.options.onFailure(job.event, error, job.attempt).catch(() => undefined);
      return;
    }
    this.options.onRetry?.(job.event, error, job.attempt, this.hurry ? 0 : delay);
    job.attempt += 1;
    if (this.hurry) {
      this.queue.push(job);
      return;
    }
    this.later(job, this.retrying, delay);
  }

  private async redeliverLater(job: Job<E>, result: R): Promise<void> {
    const max = this.options.maxRedeliveries ?? 20;
    if (job.redeliveries >= max) {
      this.waiting.delete(job.key);
      await this.options.onFailure(job.event, new RedeliveriesExhaustedError(job.redeliveries), job.attempt + job.redeliveries).catch(() => undefined);
      return;
    }
    job.redeliveries += 1;
    const delay = this.options.redeliveryDelayMs ?? 5_000;
    this.options.onRedelivery?.(job.event, result, job.redeliveries, delay);
    this.later(job, this.redelivering, delay);
  }

  private later(job: Job<E>, set: Set<Job<E>>, delayMs: number): void {
    set.add(job);
    job.timer = setTimeout(() => {
      set.delete(job);
      this.queue.push(job);
      this.pump();
    }, delayMs);
    job.timer.unref();
  }
}
