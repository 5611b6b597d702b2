import { retryDelayMs } from '../../../local/cli/device';

describe('the device simulator retry schedule (exponential backoff, full jitter)', () => {
  const highest = () => 0.999_999;

  it('waits at most the base before the first retry, and doubles the ceiling at each retry up to the cap', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map((retry) => retryDelayMs(retry, 500, 5000, highest))).toEqual([500, 1000, 2000, 4000, 5000, 5000, 5000]);
  });

  it('spreads retries between 0 and the ceiling, so a fleet refused at once does not come back at once', () => {
    expect(retryDelayMs(3, 500, 5000, () => 0)).toBe(0);
    expect(retryDelayMs(3, 500, 5000, () => 0.5)).toBe(1000);
    const sample = Array.from({ length: 200 }, () => retryDelayMs(4, 500, 5000));
    expect(new Set(sample).size).toBeGreaterThan(50);
    expect(Math.max(...sample)).toBeLessThanOrEqual(4000);
  });

  it('stays at the cap for a device that keeps retrying for a long time', () => {
    expect(retryDelayMs(60, 500, 5000, highest)).toBe(5000);
  });
});
