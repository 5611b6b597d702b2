import { assertValidDeviceId } from './device-id';
import { ChangeRecorder, DEFAULT_LIFECYCLE_SETTINGS, deviceNotFound, type DeviceCommand, type LifecycleDependencies, type LifecycleSettings } from './change-recorder';
import type { CertificateRecord, Device, DeviceView, Page } from './model';
import type { IdGenerator, ListDevicesQuery } from './ports';
import { resumeDevice, revokeDevice, suspendDevice, type RevokeDeviceCommand } from './use-cases/change-device-status';
import { issueCertificate, type IssuedDeviceCertificate, type IssueFromCsrRequest } from './use-cases/issue-certificate';
import { preRegisterDevice, type PreRegisterDeviceCommand } from './use-cases/pre-register-device';
import { registerOnFirstConnect, type Delivery, type RegistrationEvent, type RegistrationOutcome } from './use-cases/register-on-first-connect';
import { revokeCertificate, type RevokeCertificateCommand } from './use-cases/revoke-certificate';
import { requestRenewal, type RenewalRequested } from './use-cases/request-renewal';
import { deactivateCa, type CaDeactivated, type DeactivateCaCommand } from './use-cases/deactivate-ca';
import type { RenewalNotifier } from './expiry';
import {
  cancelRotationCampaign,
  getRotationCampaign,
  runRotationCampaigns,
  startRotationCampaign,
  type CampaignRunOptions,
  type CampaignsRunResult,
  type CancelRotationCampaignCommand,
  type RotationCampaign,
  type StartRotationCampaignCommand,
} from './use-cases/rotation-campaign';
import {
  commitRotation,
  requestRotation,
  sweepDueRotations,
  type CommittedRotation,
  type RotatedCertificate,
  type RotationCommit,
  type RotationRequest,
  type RotationSweepResult,
} from './use-cases/rotate-certificate';

export { DEFAULT_LIFECYCLE_SETTINGS };
export type { Actor, DeviceCommand, EnrollmentPolicy, LifecycleDependencies, LifecycleSettings } from './change-recorder';
export type { CaDeactivated, DeactivateCaCommand, RenewalRequested };
export type { CampaignRunOptions, CampaignsRunResult, CancelRotationCampaignCommand, RotationCampaign, StartRotationCampaignCommand };
export type { CommittedRotation, RotatedCertificate, RotationCommit, RotationRequest, RotationSweepResult };
export type { IssuedDeviceCertificate, IssueFromCsrRequest, PreRegisterDeviceCommand, RegistrationEvent, RegistrationOutcome, RevokeCertificateCommand, RevokeDeviceCommand };

/**
 * The device-certificate lifecycle, as the handlers and the local mode see it: one method per use case,
 * each in its own module under `use-cases/`, all sharing one `ChangeRecorder` (ports, settings, operation records).
 */
export class DeviceLifecycle {
  private readonly recorder: ChangeRecorder;

  public constructor(deps: LifecycleDependencies, settings: Partial<LifecycleSettings> = {}) {
    this.recorder = new ChangeRecorder(deps, { ...DEFAULT_LIFECYCLE_SETTINGS, ...settings });
  }

  public async getDevice(deviceId: string): Promise<DeviceView> {
    assertValidDeviceId(deviceId);
    const view = await this.recorder.store.getDeviceView(deviceId, this.recorder.settings.recentEventLimit);
    if (!view) throw deviceNotFound(deviceId);
    return view;
  }

  public listDevices(query: ListDevicesQuery): Promise<Page<Device>> {
    return this.recorder.store.listDevices(query);
  }

  public preRegisterDevice(command: PreRegisterDeviceCommand): Promise<Device> {
    return preRegisterDevice(this.recorder, command);
  }

  public registerOnFirstConnect(event: RegistrationEvent, delivery: Delivery = {}): Promise<RegistrationOutcome> {
    return registerOnFirstConnect(this.recorder, event, delivery);
  }

  public issueFromCsr(request: IssueFromCsrRequest): Promise<IssuedDeviceCertificate> {
    return issueCertificate(this.recorder, request);
  }

  public revokeCertificate(command: RevokeCertificateCommand): Promise<CertificateRecord> {
    return revokeCertificate(this.recorder, command);
  }

  public revokeDevice(command: RevokeDeviceCommand): Promise<Device> {
    return revokeDevice(this.recorder, command);
  }

  public suspendDevice(command: DeviceCommand): Promise<Device> {
    return suspendDevice(this.recorder, command);
  }

  public resumeDevice(command: DeviceCommand): Promise<Device> {
    return resumeDevice(this.recorder, command);
  }

  /** A device asks, over MQTT, for a new certificate with a new key (phase one of a rotation). */
  public requestRotation(request: RotationRequest): Promise<RotatedCertificate> {
    return requestRotation(this.recorder, request);
  }

  /** A device, connected with its new certificate, commits it (phase two): the previous one is retired. */
  public commitRotation(commit: RotationCommit): Promise<CommittedRotation> {
    return commitRotation(this.recorder, commit);
  }

  /** Tells an ACTIVE device to rotate now: the renewal notice for each of its ACTIVE certificates, through `notify`. */
  public requestRenewal(command: DeviceCommand, notify: RenewalNotifier): Promise<RenewalRequested> {
    return requestRenewal(this.recorder, command, notify);
  }

  /** Asks every ACTIVE device whose certificate expires before a date to rotate now, as paced notices (a rotation campaign). */
  public startRotationCampaign(command: StartRotationCampaignCommand): Promise<RotationCampaign> {
    return startRotationCampaign(this.recorder, command);
  }

  public getRotationCampaign(campaignId: string): Promise<RotationCampaign> {
    return getRotationCampaign(this.recorder.store, campaignId);
  }

  public cancelRotationCampaign(command: CancelRotationCampaignCommand): Promise<RotationCampaign> {
    return cancelRotationCampaign(this.recorder, command);
  }

  /** The scheduled job of rotation campaigns: sends the notices each open campaign's rate allows before the deadline. */
  public runRotationCampaigns(options: CampaignRunOptions): Promise<CampaignsRunResult> {
    return runRotationCampaigns(this.recorder.deps, options);
  }

  /** Retires a previous fleet CA (INACTIVE, auto-registration off in the registry) once no live certificate remains on it, or with `force`. */
  public deactivateCa(command: DeactivateCaCommand): Promise<CaDeactivated> {
    return deactivateCa(this.recorder, command);
  }

  /** The scheduled sweep: withdraws rotations not committed by their deadline, finishes decided ones. */
  public sweepDueRotations(options?: Parameters<typeof sweepDueRotations>[1]): Promise<RotationSweepResult> {
    return sweepDueRotations(this.recorder, options);
  }
}

export const randomIds: IdGenerator = { next: () => globalThis.crypto.randomUUID() };
