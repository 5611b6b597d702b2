/**
 * What an asynchronous Lambda invocation gives an IoT rule action, on one machine: the event is
 * queued and handled later by the function (at most `concurrency` at once), a failed invocation is
 * retried twice with a delay, and one that still fails goes to the on-failure destination.
 */
export interface AsyncInvokerOptions<E, R> {
  readonly handler: (event: E) => Promise<R>;
  readonly concurrency: number;
  /** One delay per retry; Lambda retries an asynchronous invocation twice. @default [1000, 2000] */
  readonly retryDelaysMs?: readonly number[];
  /** Events with the same key are not queued twice while one is waiting or running (redeliveries of the same event). */
  readonly keyOf: (event: E) => string;
  readonly onResult?: (event: E, result: R, attempt: number) => void;
  readonly onRetry?: (event: E, error: unknown, attempt: number, delayMs: number) => void;
  /** The on-failure destination: called once the retries are spent. */
  readonly onFailure: (event: E, error: unknown, attempts: number) => Promise<void>;
}

interface Job<E> {
  readonly key: string;
  readonly event: E;
  attempt: number;
  timer?: NodeJS.Timeout;
}

export class AsyncInvoker<E, R> {
  private readonly queue: Job<E>[] = [];
  private readonly waiting = new Map<string, Job<E>>();
  private readonly retrying = new Set<Job<E>>();
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
    const job: Job<E> = { key, event, attempt: 1 };
    this.waiting.set(key, job);
    this.queue.push(job);
    this.pump();
    return true;
  }

  public isPending(key: string): boolean {
    return this.waiting.has(key);
  }

  /** Events queued, running or waiting for a retry. */
  public get pending(): number {
    return this.waiting.size;
  }

  /**
   * Resolves when nothing is queued, running or waiting to retry. Retries waiting for their delay
   * run at once: used on shutdown, so in-flight deliveries finish instead of being dropped.
   * Resolves `false` if `timeoutMs` passes first.
   */
  public async drain(timeoutMs: number): Promise<boolean> {
    this.hurry = true;
    for (const job of this.retrying) {
      clearTimeout(job.timer);
      this.retrying.delete(job);
      this.queue.push(job);
    }
    this.pump();
    if (this.waiting.size === 0) return true;
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
        if (this.waiting.size === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
      });
    }
  }

  private async run(job: Job<E>): Promise<void> {
    try {
      const result = await this.options.handler(job.event);
      this.waiting.delete(job.key);
      this.options.onResult?.(job.event, result, job.attempt);
    } catch (error) {
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
      this.retrying.add(job);
      job.timer = setTimeout(() => {
        this.retrying.delete(job);
        this.queue.push(job);
        this.pump();
      }, delay);
      job.timer.unref();
    }
  }
}
