/**
 * When the local mode logged a line matching a pattern, as seen by the bench: its output is read every few
 * milliseconds and each new line stamped on arrival. Precise to the polling interval plus the pipe's delay
 * (a few milliseconds), enough to split a latency of hundreds of milliseconds into its parts.
 */
import { performance } from 'node:perf_hooks';

export class LogTimeline {
  private readonly stamps = new Map<string, number>();
  private readOffset: number;
  private pending = '';
  private readonly timer: NodeJS.Timeout;

  /** `pattern`'s first capture group is the key stamped (the first time it appears). */
  public constructor(
    private readonly output: () => string,
    private readonly pattern: RegExp,
    intervalMs = 5,
  ) {
    this.readOffset = output().length;
    this.timer = setInterval(() => this.poll(), intervalMs);
  }

  public at(key: string): number | undefined {
    this.poll();
    return this.stamps.get(key);
  }

  public stop(): void {
    this.poll();
    clearInterval(this.timer);
  }

  private poll(): void {
    const text = this.output();
    if (text.length === this.readOffset) return;
    const now = performance.now();
    const lines = (this.pending + text.slice(this.readOffset)).split('\n');
    this.readOffset = text.length;
    this.pending = lines.pop() ?? '';
    for (const line of lines) {
      const key = this.pattern.exec(line)?.[1];
      if (key !== undefined && !this.stamps.has(key)) this.stamps.set(key, now);
    }
  }
}
