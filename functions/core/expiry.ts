import { purposeOf } from './certificate-purpose';
import { ConfigurationError } from './errors';
import { fleetCasOf, issuingFleetCaOf, type FleetCaRole } from './fleet-cas';
import type { CertificateRecord } from './model';
import type { CaCertificates, CertificateAuthority, Clock, DeviceStore } from './ports';
import { isLiveCertificateStatus } from './state-machines';
import { inspectCertificate, splitPemChain } from './x509';

/*
 * What the expiry monitor decides: how many days the CA has left, which device certificates
 * expire soon, and what the report of a run holds. One rule throughout: a certificate is
 * "expiring within N days" when it has fewer than N whole days left (`daysLeft < N`), which is
 * the store's window [now, now + N days) and CloudWatch's `LessThanThreshold` for the CA alarm.
 */

export const DAY_MS = 86_400_000;

/** The limits of one run, named once. */
export const EXPIRY_LIMITS = {
  /** How many devices a report names; the count always covers every certificate in the window. */
  maxListedDevices: 100,
  /** Certificates asked of the store per page: a run never holds more than one page. */
  pageSize: 500,
  /** The longest warning window, in days (the store looks at most 240 monthly buckets ahead). */
  maxWarningDays: 3650,
} as const;

/**
 * Whole days left until `notAfter`, rounded down: 0 during the last day, -1 during the first day after it.
 * A certificate is expired from its `notAfter` on (as `effectiveCertificateStatus` and the JITR checks have it).
 */
export function daysLeft(notAfter: Date, now: Date): number {
  return Math.floor((notAfter.getTime() - now.getTime()) / DAY_MS);
}

/** The instants a store query covers for "fewer than `warningDays` days left": `notBefore` included, `before` excluded. */
export interface ExpiryWindow {
  readonly notBefore: Date;
  readonly before: Date;
}

export function expiryWindow(now: Date, warningDays: number): ExpiryWindow {
  return { notBefore: new Date(now.getTime()), before: new Date(now.getTime() + warningDays * DAY_MS) };
}

/**
 * Whether a certificate counts as expiring soon: still live (it can authenticate, or could again after a resume),
 * not expired yet, and fewer than `warningDays` whole days left. An expired certificate is out of the window: it
 * no longer authenticates, so a rotation over its connection cannot save it.
 */
export function isExpiringSoon(certificate: Pick<CertificateRecord, 'status' | 'notAfter'>, now: Date, warningDays: number): boolean {
  if (!isLiveCertificateStatus(certificate.status)) return false;
  const notAfter = Date.parse(certificate.notAfter);
  return notAfter > now.getTime() && notAfter < expiryWindow(now, warningDays).before.getTime();
}

/* ----------------------------------------------------------------------------
 * The CA
 * -------------------------------------------------------------------------- */

export interface CertificateValidity {
  readonly subject: string;
  readonly notAfter: Date;
}

export interface CertificateExpiry extends CertificateValidity {
  readonly daysLeft: number;
}

export interface CaExpiry {
  /**
   * The certificate that expires first among the CA certificate and its chain: once it expires, no device
   * certificate the CA signed verifies any more, whichever of the chain it is.
   */
  readonly limiting: CertificateExpiry;
  /** `limiting.daysLeft`: what the `CaDaysToExpiry` metric reports (negative once expired). */
  readonly daysLeft: number;
  readonly notAfter: Date;
  /** The CA can no longer vouch for devices: a certificate of its chain reached its `notAfter`. */
  readonly expired: boolean;
  /** Every certificate looked at, the CA's own first, then its chain in the order given. */
  readonly certificates: readonly CertificateExpiry[];
}

/** The expiry of a CA from its certificate (first) and chain; the one that ends first decides. */
export function caExpiryOf(certificates: readonly CertificateValidity[], now: Date): CaExpiry {
  const [first, ...rest] = certificates;
  if (!first) throw new ConfigurationError('The CA answered no certificate: is it activated?');
  const withDays = (certificate: CertificateValidity): CertificateExpiry => ({ ...certificate, daysLeft: daysLeft(certificate.notAfter, now) });
  const limiting = rest.reduce((soonest, certificate) => (certificate.notAfter < soonest.notAfter ? certificate : soonest), first);
  return {
    limiting: withDays(limiting),
    daysLeft: daysLeft(limiting.notAfter, now),
    notAfter: limiting.notAfter,
    expired: limiting.notAfter.getTime() <= now.getTime(),
    certificates: certificates.map(withDays),
  };
}

/** The subject and `notAfter` of the CA certificate and of each certificate of its chain, in that order. */
export async function validitiesOf(ca: CaCertificates): Promise<CertificateValidity[]> {
  const pems = [ca.certificatePem, ...splitPemChain(ca.certificateChainPem)];
  const facts = await Promise.all(pems.map((pem) => inspectCertificate(pem)));
  return facts.map(({ subject, notAfter }) => ({ subject, notAfter }));
}

/* ----------------------------------------------------------------------------
 * Device certificates
 * -------------------------------------------------------------------------- */

export interface ExpiringCertificatesReport {
  readonly warningDays: number;
  readonly window: ExpiryWindow;
  /** Live certificates with fewer than `warningDays` days left. */
  readonly count: number;
  /** The devices of the soonest-expiring of them, each once, soonest first; at most `maxListedDevices`. */
  readonly deviceIds: readonly string[];
  /** More devices have certificates in the window than `deviceIds` names. */
  readonly truncated: boolean;
  /** The `notAfter` of the soonest-expiring certificate, when there is one. */
  readonly soonestNotAfter?: string;
}

/**
 * Counts the certificates of a window page by page, keeping only the first `maxListedDevices` device ids:
 * whatever the fleet's size, a run holds one page and a short list. Pages come soonest first.
 */
export class ExpiringCertificatesTally {
  private count = 0;
  private readonly deviceIds = new Set<string>();
  private truncated = false;
  private soonestNotAfter?: string;

  public constructor(
    private readonly now: Date,
    private readonly warningDays: number,
    private readonly maxListedDevices: number = EXPIRY_LIMITS.maxListedDevices,
  ) {}

  public add(certificates: readonly CertificateRecord[]): this {
    for (const certificate of certificates) {
      if (!isExpiringSoon(certificate, this.now, this.warningDays)) continue;
      this.count += 1;
      if (this.soonestNotAfter === undefined || certificate.notAfter < this.soonestNotAfter) this.soonestNotAfter = certificate.notAfter;
      const deviceId = certificate.deviceId;
      if (deviceId === undefined || this.deviceIds.has(deviceId)) continue;
      if (this.deviceIds.size < this.maxListedDevices) this.deviceIds.add(deviceId);
      else this.truncated = true;
    }
    return this;
  }

  public report(): ExpiringCertificatesReport {
    return {
      warningDays: this.warningDays,
      window: expiryWindow(this.now, this.warningDays),
      count: this.count,
      deviceIds: [...this.deviceIds],
      truncated: this.truncated,
      ...(this.soonestNotAfter === undefined ? {} : { soonestNotAfter: this.soonestNotAfter }),
    };
  }
}

/* ----------------------------------------------------------------------------
 * Renewal notices
 * -------------------------------------------------------------------------- */

/** How long before `notAfter` a device should have started its rotation: a commit window and retries fit in it. */
export const RENEWAL_MARGIN_MS = DAY_MS;

/** What `devices/<thing>/certificates/expiring` carries: which certificate, until when it works, and when to have renewed it by. */
export interface RenewalNotice {
  readonly certificateId: string;
  readonly notAfter: string;
  /** Start the rotation before this instant (now, when the margin has already begun). */
  readonly renewBy: string;
}

/**
 * The notice for a live certificate of a device, if it should get one: ACTIVE (a suspended device cannot rotate), not
 * expired, and operational (a bootstrap certificate cannot be rotated over MQTT; it only serves recovery).
 */
export function renewalNoticeOf(certificate: Pick<CertificateRecord, 'certificateId' | 'deviceId' | 'status' | 'notAfter' | 'purpose'>, now: Date): RenewalNotice | undefined {
  if (certificate.status !== 'ACTIVE' || certificate.deviceId === undefined || purposeOf(certificate) !== 'OPERATIONAL') return undefined;
  const notAfter = Date.parse(certificate.notAfter);
  if (notAfter <= now.getTime()) return undefined;
  return { certificateId: certificate.certificateId, notAfter: certificate.notAfter, renewBy: new Date(Math.max(now.getTime(), notAfter - RENEWAL_MARGIN_MS)).toISOString() };
}

/** Where the monitor sends each notice; the handler paces it and publishes it to the device's topic. */
export type RenewalNotifier = (deviceId: string, notice: RenewalNotice) => Promise<void>;

/* ----------------------------------------------------------------------------
 * The use case
 * -------------------------------------------------------------------------- */

export interface ExpiryMonitorDependencies {
  readonly ca: Pick<CertificateAuthority, 'getCaCertificates'>;
  readonly store: Pick<DeviceStore, 'findCertificatesExpiring'>;
  readonly clock: Clock;
}

export interface ExpiryMonitorSettings {
  /** Device certificates with fewer whole days left than this are reported. */
  readonly warningDays: number;
  /** @default EXPIRY_LIMITS.maxListedDevices */
  readonly maxListedDevices?: number;
  /** @default EXPIRY_LIMITS.pageSize */
  readonly pageSize?: number;
}

/** Reads the CA's certificates and the store's expiry index, and says what is about to expire. */
export class ExpiryMonitor {
  private readonly maxListedDevices: number;
  private readonly pageSize: number;

  public constructor(
    private readonly dependencies: ExpiryMonitorDependencies,
    public readonly settings: ExpiryMonitorSettings,
  ) {
    const { warningDays } = settings;
    if (!Number.isInteger(warningDays) || warningDays < 1 || warningDays > EXPIRY_LIMITS.maxWarningDays) {
      throw new ConfigurationError(`The expiry warning window must be a whole number of days from 1 to ${EXPIRY_LIMITS.maxWarningDays} (got ${warningDays}).`);
    }
    this.maxListedDevices = settings.maxListedDevices ?? EXPIRY_LIMITS.maxListedDevices;
    this.pageSize = settings.pageSize ?? EXPIRY_LIMITS.pageSize;
  }

  /** The days left to the CA certificate, or to the certificate of its chain that expires first. */
  public async checkCa(): Promise<CaExpiry> {
    const now = this.dependencies.clock.now();
    return caExpiryOf(await validitiesOf(await this.dependencies.ca.getCaCertificates()), now);
  }

  /**
   * Live device certificates with fewer than `warningDays` days left, counted page by page; with `notify`, each ACTIVE
   * one's device is also told to renew it (`renewalNoticeOf`), page by page, so a run never holds more than a page.
   */
  public async findExpiringCertificates(notify?: RenewalNotifier): Promise<ExpiringCertificatesReport & { readonly noticesSent: number }> {
    const now = this.dependencies.clock.now();
    const window = expiryWindow(now, this.settings.warningDays);
    const tally = new ExpiringCertificatesTally(now, this.settings.warningDays, this.maxListedDevices);
    let noticesSent = 0;
    let nextToken: string | undefined;
    do {
      const page = await this.dependencies.store.findCertificatesExpiring({ ...window, limit: this.pageSize, ...(nextToken ? { nextToken } : {}) });
      tally.add(page.items);
      for (const certificate of notify ? page.items : []) {
        const notice = isExpiringSoon(certificate, now, this.settings.warningDays) ? renewalNoticeOf(certificate, now) : undefined;
        if (!notice || !notify) continue;
        await notify(certificate.deviceId as string, notice);
        noticesSent += 1;
      }
      nextToken = page.nextToken;
    } while (nextToken);
    return { ...tally.report(), noticesSent };
  }
}

/* ----------------------------------------------------------------------------
 * The fleet's CAs: devices still on each, and devices that expired without rotating
 * -------------------------------------------------------------------------- */

/** How many live certificates one fleet CA still has (ACTIVE certificates of ACTIVE devices). */
export interface FleetCaUsage {
  readonly caCertificateId: string;
  readonly role: FleetCaRole;
  readonly subject: string;
  readonly liveCertificates: number;
  /** Whole days left to the CA (or the certificate of its chain that expires first): its devices are stranded after that. */
  readonly daysLeft: number;
  /** The devices holding them (each once), at most `maxListedDevices`. */
  readonly deviceIds: readonly string[];
}

export interface FleetCaCensusReport {
  readonly cas: readonly FleetCaUsage[];
  /** ACTIVE certificates of ACTIVE devices that none of the fleet's CAs signed (a CA dropped from the settings too early). */
  readonly unknownIssuer: number;
  /** ACTIVE devices whose every live operational certificate is past its `notAfter`: they can no longer rotate by themselves. */
  readonly devicesExpiredWithoutRotation: number;
  /** The first `maxListedDevices` of them. */
  readonly expiredDeviceIds: readonly string[];
  readonly devicesChecked: number;
}

export interface FleetCaCensusDependencies {
  readonly ca: Pick<CertificateAuthority, 'getCaCertificates'>;
  readonly store: Pick<DeviceStore, 'listDevices' | 'listDeviceCertificates'>;
  readonly clock: Clock;
}

/** The limits of one census, named once. */
export const CENSUS_LIMITS = {
  /** Devices asked of the store per page. */
  pageSize: 100,
  /** Devices whose certificates are read at once. */
  concurrency: 8,
} as const;

/**
 * Counts, over every ACTIVE device (page by page, a few devices at a time), the live certificates each fleet CA still
 * has, and the devices whose certificates all expired. The issuing CA of a certificate is found from the certificate
 * itself (`issuingFleetCaOf`), so records written before CA rotation existed are counted like new ones.
 */
export class FleetCaCensus {
  public constructor(
    private readonly dependencies: FleetCaCensusDependencies,
    private readonly settings: { readonly maxListedDevices?: number; readonly pageSize?: number } = {},
  ) {}

  public async run(): Promise<FleetCaCensusReport> {
    const { store, ca, clock } = this.dependencies;
    const maxListed = this.settings.maxListedDevices ?? EXPIRY_LIMITS.maxListedDevices;
    const now = clock.now().getTime();
    const cas = await fleetCasOf(await ca.getCaCertificates());
    const usage = new Map(cas.map((fleetCa) => [fleetCa.caCertificateId, { live: 0, deviceIds: new Set<string>() }]));
    let unknownIssuer = 0;
    let expired = 0;
    const expiredDeviceIds: string[] = [];
    let devicesChecked = 0;

    const countDevice = async (deviceId: string): Promise<void> => {
      const operational = (await store.listDeviceCertificates(deviceId))
        // A bootstrap certificate only serves recovery: it neither keeps a device from counting as expired nor counts on a CA.
        .filter((certificate) => purposeOf(certificate) === 'OPERATIONAL');
      const live = operational.filter((certificate) => isLiveCertificateStatus(certificate.status));
      if (live.length > 0 && live.every((certificate) => Date.parse(certificate.notAfter) <= now)) {
        expired += 1;
        if (expiredDeviceIds.length < maxListed) expiredDeviceIds.push(deviceId);
      }
      for (const certificate of operational.filter((one) => one.status === 'ACTIVE')) {
        const issuer = (await issuingFleetCaOf(cas, certificate.certificatePem).catch(() => undefined))?.caCertificateId;
        const counted = issuer === undefined ? undefined : usage.get(issuer);
        if (!counted) {
          unknownIssuer += 1;
          continue;
        }
        counted.live += 1;
        if (counted.deviceIds.size < maxListed) counted.deviceIds.add(deviceId);
      }
    };

    let nextToken: string | undefined;
    do {
      const page = await store.listDevices({ status: 'ACTIVE', limit: this.settings.pageSize ?? CENSUS_LIMITS.pageSize, ...(nextToken ? { nextToken } : {}) });
      const devices = [...page.items];
      for (let start = 0; start < devices.length; start += CENSUS_LIMITS.concurrency) {
        await Promise.all(devices.slice(start, start + CENSUS_LIMITS.concurrency).map((device) => countDevice(device.deviceId)));
      }
      devicesChecked += devices.length;
      nextToken = page.nextToken;
    } while (nextToken);

    const expiries = await Promise.all(cas.map(async (fleetCa) => caExpiryOf(await validitiesOf({ certificatePem: fleetCa.certificatePem, certificateChainPem: fleetCa.pems.slice(1).join('') }), clock.now())));
    return {
      cas: cas.map((fleetCa, index) => {
        const counted = usage.get(fleetCa.caCertificateId) ?? { live: 0, deviceIds: new Set<string>() };
        return {
          caCertificateId: fleetCa.caCertificateId,
          role: fleetCa.role,
          subject: fleetCa.subject,
          liveCertificates: counted.live,
          daysLeft: expiries[index]?.daysLeft ?? 0,
          deviceIds: [...counted.deviceIds],
        };
      }),
      unknownIssuer,
      devicesExpiredWithoutRotation: expired,
      expiredDeviceIds,
      devicesChecked,
    };
  }
}
