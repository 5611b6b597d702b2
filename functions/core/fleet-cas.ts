import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type { CaCertificates } from './ports';
import { certificateIdOf, isSignedBy, splitPemChain } from './x509';

/*
 * The fleet's CAs during a CA rotation: the one that signs (`current`) and the ones that no longer sign but whose
 * certificates are still accepted for JITR, rotation and connects (`previous`) until their devices have rotated
 * over and an operator deactivates them. New certificates always come from the current CA, so a device moves by
 * the ordinary rotation protocol.
 */

export type FleetCaRole = 'current' | 'previous';

export interface FleetCa {
  readonly role: FleetCaRole;
  /** AWS IoT's id of the CA certificate: SHA-256 of its DER, lower-case hex. */
  readonly caCertificateId: string;
  readonly certificatePem: string;
  /** The CA certificate and its chain, leaf-most first: what a device certificate it signed is checked against. */
  readonly pems: readonly string[];
  readonly subject: string;
  /** The CA's subject key identifier, hex, when its certificate carries one. */
  readonly subjectKeyId?: string;
}

/**
 * The fleets' CAs as read, by the certificates they were read from. A fleet has one to a few CAs and every JITR event
 * and rotation needs them: read once (≈ 3 ms of parsing each time), not per event. Bounded: a process serves one fleet.
 */
const fleetCasByCertificates = new Map<string, readonly FleetCa[]>();
const MAX_CACHED_FLEETS = 16;

const cacheKeyOf = (ca: CaCertificates): string =>
  [ca.certificatePem, ca.certificateChainPem, ...(ca.previous ?? []).flatMap((previous) => [previous.certificatePem, previous.certificateChainPem])].join('\0');

/** Every CA the fleet accepts, the current one first. A CA listed twice (as current and previous) counts once, as current. */
export async function fleetCasOf(ca: CaCertificates): Promise<FleetCa[]> {
  const key = cacheKeyOf(ca);
  let cas = fleetCasByCertificates.get(key);
  if (!cas) {
    cas = Object.freeze(await readFleetCas(ca));
    if (fleetCasByCertificates.size >= MAX_CACHED_FLEETS) fleetCasByCertificates.clear();
    fleetCasByCertificates.set(key, cas);
  }
  return [...cas];
}

async function readFleetCas(ca: CaCertificates): Promise<FleetCa[]> {
  const all = [{ role: 'current' as const, ca }, ...(ca.previous ?? []).map((previous) => ({ role: 'previous' as const, ca: previous }))];
  const cas: FleetCa[] = [];
  for (const { role, ca: one } of all) {
    const caCertificateId = await certificateIdOf(one.certificatePem);
    if (cas.some((known) => known.caCertificateId === caCertificateId)) continue;
    const parsed = new x509.X509Certificate(one.certificatePem);
    const subjectKeyId = parsed.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
    const pems = [parsed.toString('pem'), ...splitPemChain(one.certificateChainPem)];
    cas.push(
      Object.freeze({
        role,
        caCertificateId,
        certificatePem: pems[0] as string,
        pems: Object.freeze(pems),
        subject: parsed.subject,
        ...(subjectKeyId === undefined ? {} : { subjectKeyId: subjectKeyId.toLowerCase() }),
      }),
    );
  }
  return cas;
}

/** The ids of the certificates above each fleet CA in its chain, read once per fleet CA (see `fleetCasOf`). */
const chainIdsOfCa = new WeakMap<FleetCa, Promise<readonly string[]>>();

function chainIdsOf(ca: FleetCa): Promise<readonly string[]> {
  let ids = chainIdsOfCa.get(ca);
  if (!ids) {
    ids = Promise.all(ca.pems.slice(1).map(certificateIdOf));
    chainIdsOfCa.set(ca, ids);
    // A chain that does not read is not kept: the next call tries again (and fails the same way).
    ids.catch(() => chainIdsOfCa.delete(ca));
  }
  return ids;
}

/**
 * The fleet CA a registration event names (the event's `caCertificateId` is the CA AWS IoT matched), or undefined
 * for another CA registered in the account. A CA of the chain above the signing CA counts as that CA's.
 */
export async function fleetCaOfRegistration(cas: readonly FleetCa[], caCertificateId: string): Promise<FleetCa | undefined> {
  for (const ca of cas) {
    if (ca.caCertificateId === caCertificateId) return ca;
    if ((await chainIdsOf(ca)).includes(caCertificateId)) return ca;
  }
  return undefined;
}

/**
 * The fleet CA that signed a device certificate, or undefined when none of them did. Matched by authority key
 * identifier (or, when either side lacks one, by issuer name) and then confirmed by the signature, so it needs no
 * field on the record: certificates recorded before CA rotation existed are placed as well as new ones. Async so that
 * a certificate that does not parse is a rejection, as its callers expect.
 */
export async function issuingFleetCaOf(cas: readonly FleetCa[], certificatePem: string): Promise<FleetCa | undefined> {
  const certificate = new x509.X509Certificate(certificatePem);
  const authorityKeyId = certificate.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId?.toLowerCase();
  const candidates = cas.filter((ca) => (authorityKeyId !== undefined && ca.subjectKeyId !== undefined ? ca.subjectKeyId === authorityKeyId : ca.subject === certificate.issuer));
  return candidates.find((ca) => isSignedBy(certificate, ca.certificatePem));
}
