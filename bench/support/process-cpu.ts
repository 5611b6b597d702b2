/**
 * CPU time of a process and everything it started (the local mode and its DynamoDB Local JVM), read from /proc:
 * how much CPU a benchmark's unit of work costs on each side, to see which one bounds a rate. Linux only; elsewhere
 * every figure is undefined and the benchmarks print no split.
 */
import { readFileSync } from 'node:fs';

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** utime + stime of one process, in milliseconds; undefined when it cannot be read. */
function ownCpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

/** CPU milliseconds of `pid` itself, and of its descendants together. */
export function cpuOfTree(pid: number): { own?: number; descendants?: number } {
  const own = ownCpuMs(pid);
  let descendants: number | undefined;
  const pending = childrenOf(pid);
  while (pending.length > 0) {
    const child = pending.pop() as number;
    const cpu = ownCpuMs(child);
    if (cpu !== undefined) descendants = (descendants ?? 0) + cpu;
    pending.push(...childrenOf(child));
  }
  return { ...(own === undefined ? {} : { own }), ...(descendants === undefined ? {} : { descendants }) };
}

export interface CpuSnapshot {
  readonly server?: number;
  readonly dynamo?: number;
  readonly bench: number;
}

/** The local mode's node process (`server`), its children (`dynamo`: DynamoDB Local), and this process (`bench`: the devices). */
export function cpuSnapshot(serverPid: number): CpuSnapshot {
  const tree = cpuOfTree(serverPid);
  const usage = process.cpuUsage();
  return { ...(tree.own === undefined ? {} : { server: tree.own }), ...(tree.descendants === undefined ? {} : { dynamo: tree.descendants }), bench: (usage.user + usage.system) / 1000 };
}

/** `server 12.3 ms, DynamoDB Local 4.5 ms, devices (bench) 6.7 ms` per unit between two snapshots. */
export function cpuPer(before: CpuSnapshot, after: CpuSnapshot, units: number): string {
  const part = (name: string, from?: number, to?: number) => (from === undefined || to === undefined ? [] : [`${name} ${((to - from) / units).toFixed(1)} ms`]);
  return [...part('server (node)', before.server, after.server), ...part('DynamoDB Local', before.dynamo, after.dynamo), ...part('devices (bench process)', before.bench, after.bench)].join(', ');
}
