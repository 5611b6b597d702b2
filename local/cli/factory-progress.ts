/**
 * What a factory run shows while it works: on a terminal, one progress line redrawn in place (and a line
 * of its own for each failure); otherwise (a pipe, a log file, CI) one plain line per device.
 */

export type ItemOutcome = 'SIGNED' | 'CREATED' | 'EXISTS' | 'SKIPPED' | 'FAILED';

export interface ItemEvent {
  readonly deviceId: string;
  readonly outcome: ItemOutcome;
  /** One human-readable clause: what was done, or why it failed. */
  readonly detail: string;
}

export interface Progress {
  start(total: number, what: string): void;
  item(event: ItemEvent): void;
  /** A line that is not about one device (a retry wave, an abort). */
  note(line: string): void;
  finish(): void;
}

export interface ProgressStream {
  write(text: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

/** The progress a CLI run uses: in place on a terminal (stderr), plain lines on stdout otherwise; nothing per device with `quiet`. */
export function progressFor(options: { stdout: ProgressStream; stderr: ProgressStream; quiet?: boolean; now?: () => number }): Progress {
  if (options.stderr.isTTY) return new TerminalProgress(options.stderr, options.now);
  if (options.quiet) return { start: () => undefined, item: () => undefined, note: () => undefined, finish: () => undefined };
  return new PlainProgress(options.stdout);
}

const LABELS: Readonly<Record<ItemOutcome, string>> = { SIGNED: 'signed', CREATED: 'created', EXISTS: 'exists', SKIPPED: 'skipped', FAILED: 'FAILED' };

export class PlainProgress implements Progress {
  private done = 0;
  private total = 0;

  public constructor(private readonly out: ProgressStream) {}

  public start(total: number, what: string): void {
    this.total = total;
    this.out.write(`${what}: ${total} device${total === 1 ? '' : 's'}\n`);
  }

  public item(event: ItemEvent): void {
    this.done += 1;
    this.out.write(`[${this.done}/${this.total}] ${LABELS[event.outcome]} ${event.deviceId}: ${event.detail}\n`);
  }

  public note(line: string): void {
    this.out.write(`${line}\n`);
  }

  public finish(): void {}
}

export class TerminalProgress implements Progress {
  private total = 0;
  private startedAt = 0;
  private readonly counts: Record<ItemOutcome, number> = { SIGNED: 0, CREATED: 0, EXISTS: 0, SKIPPED: 0, FAILED: 0 };
  private drawn = false;

  public constructor(
    private readonly out: ProgressStream,
    private readonly now: () => number = Date.now,
  ) {}

  public start(total: number, what: string): void {
    this.total = total;
    this.startedAt = this.now();
    this.out.write(`${what}: ${total} device${total === 1 ? '' : 's'}\n`);
    this.draw();
  }

  public item(event: ItemEvent): void {
    this.counts[event.outcome] += 1;
    if (event.outcome === 'FAILED') this.above(`FAILED ${event.deviceId}: ${event.detail}`);
    this.draw();
  }

  public note(line: string): void {
    this.above(line);
    this.draw();
  }

  public finish(): void {
    if (this.drawn) this.out.write('\n');
    this.drawn = false;
  }

  /** The progress line: a bar, the counts, the pace and what is left. */
  public line(): string {
    const done = Object.values(this.counts).reduce((sum, count) => sum + count, 0);
    const width = 24;
    const filled = this.total === 0 ? width : Math.round((done / this.total) * width);
    const seconds = Math.max((this.now() - this.startedAt) / 1000, 0.001);
    const rate = done / seconds;
    const left = rate > 0 ? Math.ceil((this.total - done) / rate) : undefined;
    const counts = (Object.keys(this.counts) as ItemOutcome[])
      .filter((outcome) => this.counts[outcome] > 0)
      .map((outcome) => `${LABELS[outcome].toLowerCase()} ${this.counts[outcome]}`)
      .join(', ');
    return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${done}/${this.total}${counts ? `  ${counts}` : ''}  ${rate.toFixed(1)}/s${left !== undefined && done < this.total ? `  ~${left}s left` : ''}`;
  }

  private draw(): void {
    const columns = this.out.columns ?? 100;
    this.out.write(`\r\x1b[2K${this.line().slice(0, Math.max(columns - 1, 20))}`);
    this.drawn = true;
  }

  private above(text: string): void {
    this.out.write(`${this.drawn ? '\r\x1b[2K' : ''}${text}\n`);
    this.drawn = false;
  }
}
