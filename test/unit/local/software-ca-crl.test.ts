import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { SOFTWARE_CA_LIMITS, SoftwareCertificateAuthority } from '../../../functions/adapters/local/software-ca';

const HOUR_MS = 3_600_000;
const START = new Date('2026-03-01T00:00:00Z');

/** A CA on a clock the test moves, with a counter of the CRLs it signs. */
async function fixture() {
  let now = START;
  const { ca } = await SoftwareCertificateAuthority.create('CRL cache test CA', { now: () => now });
  const signatures = jest.spyOn(x509.X509CrlGenerator, 'create');
  signatures.mockClear();
  return {
    ca,
    signatures,
    advance: (ms: number) => (now = new Date(now.getTime() + ms)),
    revoke: (serialNumber: string) => ca.revokeCertificate({ serialNumber, reason: 'KEY_COMPROMISE', certificatePem: '' }), // this CA finds certificates by serial
  };
}

const serialsOf = (pem: string) => new x509.X509Crl(pem).entries.map((entry) => entry.serialNumber.toLowerCase());

describe('SoftwareCertificateAuthority: a CRL signed once per change', () => {
  afterEach(() => jest.restoreAllMocks());

  test('signs once for 20 concurrent requests and answers the same CRL until something changes', async () => {
    const { ca, signatures } = await fixture();

    const concurrent = await Promise.all(Array.from({ length: 20 }, () => ca.generateCrlPem()));
    const later = await ca.generateCrlPem();

    expect(new Set([...concurrent, later]).size).toBe(1);
    expect(signatures).toHaveBeenCalledTimes(1);
  });

  test('signs a new CRL, listing the serial, after a revocation', async () => {
    const { ca, signatures, revoke } = await fixture();
    const before = await ca.generateCrlPem();

    await revoke('7a01');
    const after = await ca.generateCrlPem();

    expect(after).not.toBe(before);
    expect(serialsOf(before)).toEqual([]);
    expect(serialsOf(after)).toEqual(['7a01']);
    expect(signatures).toHaveBeenCalledTimes(2);
  });

  test('a revocation made while a CRL is being signed is in the next CRL', async () => {
    const { ca, revoke } = await fixture();

    const signing = ca.generateCrlPem();
    await revoke('7a02');
    const next = await ca.generateCrlPem();
    await signing;

    expect(serialsOf(next)).toContain('7a02');
    expect(await ca.generateCrlPem()).toBe(next);
  });

  test(`signs again once ${SOFTWARE_CA_LIMITS.crlReissueAfterHours} hours have passed, with no new revocation, so a CRL served always has that long before its nextUpdate`, async () => {
    const { ca, signatures, advance } = await fixture();
    const first = await ca.generateCrlPem();

    advance(SOFTWARE_CA_LIMITS.crlReissueAfterHours * HOUR_MS - 1);
    const justBefore = await ca.generateCrlPem();
    advance(1);
    const reissued = await ca.generateCrlPem();

    expect(justBefore).toBe(first);
    expect(reissued).not.toBe(first);
    expect(signatures).toHaveBeenCalledTimes(2);
    const crl = new x509.X509Crl(reissued);
    expect(crl.thisUpdate.getTime()).toBe(START.getTime() + SOFTWARE_CA_LIMITS.crlReissueAfterHours * HOUR_MS);
    expect(crl.nextUpdate?.getTime()).toBe(crl.thisUpdate.getTime() + SOFTWARE_CA_LIMITS.crlValidityHours * HOUR_MS);
  });
});
