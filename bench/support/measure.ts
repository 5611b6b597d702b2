/**
 * What every benchmark in bench/ measures with: a closed-loop run at a fixed concurrency, nearest-rank
 * percentiles, and the machine line printed with each figure (so a figure is read with its load).
 */
import { availableParallelism, cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';

export interface Run<R> {
  readonly wallMs: number;
  /** One per item that succeeded, in milliseconds. */
  readonly latenciesMs: number[];
  readonly results: (R | undefined)[];
  readonly errors: { readonly index: number; readonly error: unknown }[];
}

/** `work` over every item, `concurrency` at a time; a failure is recorded, never ends the run. */
export async function measure<T, R>(items: readonly T[], concurrency: number, work: (item: T, index: number) => Promise<R>): Promise<Run<R>> {
  const latenciesMs: number[] = [];
  const results: (R | undefined)[] = new Array(items.length);
  const errors: { index: number; error: unknown }[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const index = next++;
        const begun = performance.now();
        try {
          results[index] = await work(items[index] as T, index);
          latenciesMs.push(performance.now() - begun);
        } catch (error) {
          errors.push({ index, error });
        }
      }
    }),
  );
  return { wallMs: performance.now() - started, latenciesMs, results, errors };
}

/** Nearest-rank percentile. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number;
}

export const mean = (values: readonly number[]): number => (values.length === 0 ? Number.NaN : values.reduce((sum, value) => sum + value, 0) / values.length);
export const ms = (value: number): string => `${value.toFixed(0)} ms`;
/** Items per second. */
export const rate = (count: number, wallMs: number): number => count / (wallMs / 1000);
export const latencies = (values: readonly number[]): string => `p50 ${ms(percentile(values, 50))}, p99 ${ms(percentile(values, 99))}`;
export const pad = (index: number): string => String(index).padStart(4, '0');

/** Two bracketing runs of a baseline taken together (items and wall time summed), and how far apart they were. */
export function bracketed(before: { count: number; wallMs: number }, after: { count: number; wallMs: number }): { rate: number; before: number; after: number; drift: number } {
  const first = rate(before.count, before.wallMs);
  const second = rate(after.count, after.wallMs);
  return { rate: rate(before.count + after.count, before.wallMs + after.wallMs), before: first, after: second, drift: Math.abs(first - second) / ((first + second) / 2) };
}

/** `machine: 2 CPUs (model), load 0.4 at the start, 1.9 now`. */
export function machineLine(loadAtStart: number): string {
  const model = cpus()[0]?.model.trim() ?? 'unknown CPU';
  return `machine: ${availableParallelism()} CPUs (${model}), node ${process.version}, 1-minute load average ${loadAtStart.toFixed(1)} at the start, ${(loadavg()[0] as number).toFixed(1)} at the end`;
}

export const loadNow = (): number => loadavg()[0] as number;

/** Integer options from `--name value` / `--name=value` flags, falling back to an environment variable, then a default. */
export function integerOptions<K extends string>(argv: readonly string[], spec: Record<K, { readonly env?: string; readonly fallback: number; readonly min: number }>, usage: string): Record<K, number> | 'HELP' {
  const raw: Partial<Record<string, string>> = {};
  for (let index = 0; index < argv.length; index += 1) {
    const arg = argv[index] as string;
    if (arg === '--help' || arg === '-h') return 'HELP';
    const [flag, inline] = arg.split('=', 2) as [string, string | undefined];
    const name = flag.replace(/^--/, '');
    if (!flag.startsWith('--') || !(name in spec)) throw new Error(`unknown argument ${arg}\n${usage}`);
    raw[name] = inline ?? argv[++index];
  }
  const values = {} as Record<K, number>;
  for (const [name, { env, fallback, min }] of Object.entries(spec) as [K, { env?: string; fallback: number; min: number }][]) {
    const text = raw[name] ?? (env === undefined ? undefined : process.env[env]);
    if (text === undefined) {
      values[name] = fallback;
      continue;
    }
    const value = Number(text);
    if (!Number.isInteger(value) || value < min) throw new Error(`--${name} must be an integer of at least ${min}, not ${JSON.stringify(text)}\n${usage}`);
    values[name] = value;
  }
  return values;
}
