import 'reflect-metadata';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { SOFTWARE_CA_LIMITS, SoftwareCertificateAuthority } from '../../../functions/adapters/local/software-ca';
import { run } from '../../../local/cli/iotcert';
import { dataFiles, writeCaMaterial } from '../../../local/data-dir';
import { makeCsr } from '../../support/pki';

const DAY_MS = 86_400_000;
const NOW = new Date('2026-03-01T00:00:00Z');

async function newCa(now = NOW) {
  return SoftwareCertificateAuthority.create('Limits test CA', { now: () => now });
}

/** The two ways the software CA signs a device certificate: a factory's mint, and a CSR through the lifecycle. */
const issuers = {
  mintDeviceCertificate: async (ca: SoftwareCertificateAuthority, days: number) => ca.mintDeviceCertificate('limits-1', (await makeCsr('limits-1')).csrPem, days),
  issueCertificate: async (ca: SoftwareCertificateAuthority, days: number) =>
    (await ca.issueCertificate({ csrPem: (await makeCsr('limits-1')).csrPem, validityDays: days, idempotencyToken: `token-${days}` })).certificatePem,
};

describe('SoftwareCertificateAuthority: one validity check for every certificate it signs', () => {
  describe.each(Object.entries(issuers))('%s', (_name, issue) => {
    test.each([1, SOFTWARE_CA_LIMITS.maxValidityDays])('signs a certificate valid for exactly %i days', async (days) => {
      const { ca } = await newCa();

      const pem = await issue(ca, days);

      expect(new x509.X509Certificate(pem).notAfter.getTime()).toBe(NOW.getTime() + days * DAY_MS);
    });

    test.each([0, SOFTWARE_CA_LIMITS.maxValidityDays + 1, 100_000, 1.5])('rejects a validity of %d days', async (days) => {
      const { ca } = await newCa();

      await expect(issue(ca, days)).rejects.toThrow(`Validity must be 1 to ${SOFTWARE_CA_LIMITS.maxValidityDays} days (asked: ${days}).`);
    });

    test('rejects a validity that would end after the CA certificate, instead of cutting it short', async () => {
      // Prepare: a CA with 10 days left (made 3640 days before now).
      const { material } = await newCa(new Date(NOW.getTime() - (SOFTWARE_CA_LIMITS.caValidityDays - 10) * DAY_MS));
      const ca = await SoftwareCertificateAuthority.load(material, { now: () => NOW });

      await expect(issue(ca, 30)).rejects.toThrow(/^Validity of 30 days would end after the CA certificate expires \(2026-03-11T00:00:00\.000Z\)/);
      await expect(issue(ca, 9)).resolves.toContain('BEGIN CERTIFICATE');
    });
  });
});

describe('iotcert device mint --days', () => {
  let dir: string;
  let errors: string[];
  let errorSpy: jest.SpyInstance;
  let logSpy: jest.SpyInstance;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'iotcert-cli-'));
    const { material } = await SoftwareCertificateAuthority.create('CLI test CA');
    await writeCaMaterial(dataFiles(dir), material);
    errors = [];
    errorSpy = jest.spyOn(console, 'error').mockImplementation((message: string) => void errors.push(message));
    logSpy = jest.spyOn(console, 'log').mockImplementation(() => undefined);
  });

  afterEach(async () => {
    errorSpy.mockRestore();
    logSpy.mockRestore();
    process.exitCode = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  test('rejects --days 100000 with the limit in plain words, exit code 2, and writes nothing', async () => {
    const out = join(dir, 'device');

    await run(['device', 'mint', '--id', 'cli-days-1', '--out', out, '--days', '100000', '--data-dir', dir]);

    expect(process.exitCode).toBe(2);
    expect(errors).toEqual([`iotcert: refused, nothing written: Validity must be 1 to ${SOFTWARE_CA_LIMITS.maxValidityDays} days (asked: 100000).`]);
    expect(existsSync(out)).toBe(false);
  });

  test('mints with --days at the limit', async () => {
    await run(['device', 'mint', '--id', 'cli-days-2', '--out', join(dir, 'device'), '--days', String(SOFTWARE_CA_LIMITS.maxValidityDays), '--data-dir', dir]);

    expect(errors).toEqual([]);
    expect(process.exitCode).toBe(0);
  });
});
