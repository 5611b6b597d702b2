import {
  AddThingToThingGroupCommand,
  AttachPolicyCommand,
  AttachThingPrincipalCommand,
  CreateThingCommand,
  DescribeCertificateCommand,
  DetachPolicyCommand,
  DetachThingPrincipalCommand,
  IoTClient,
  RegisterCertificateCommand,
  RegisterCertificateWithoutCACommand,
  UpdateCACertificateCommand,
  UpdateCertificateCommand,
  type CertificateStatus,
} from '@aws-sdk/client-iot';
import { LifecycleError, NotFoundError, UpstreamError } from '../../core/errors';
import type { DeviceRegistry, RegisterCertificateRequest, RegisteredCertificate, RegistryCertificate, RegistryCertificateStatus } from '../../core/ports';
import { certificateIdOf } from '../../core/x509';
import { errorName, retryingClientConfig, toUpstreamError } from './aws-errors';

/** Every AWS IoT action this adapter can call in any mode; {@link iotRegistryIamActions} narrows it to one use. */
export const IOT_REGISTRY_IAM_ACTIONS = [
  'iot:DescribeCertificate',
  'iot:RegisterCertificate',
  'iot:RegisterCertificateWithoutCA',
  'iot:UpdateCertificate',
  'iot:CreateThing',
  'iot:AddThingToThingGroup',
  'iot:AttachThingPrincipal',
  'iot:DetachThingPrincipal',
  'iot:AttachPolicy',
  'iot:DetachPolicy',
  'iot:UpdateCACertificate',
] as const;

export type IotRegistryIamAction = (typeof IOT_REGISTRY_IAM_ACTIONS)[number];

/** An operation of the registry port. */
export type RegistryOperation = keyof DeviceRegistry;

/** How the adapter runs: the two choices that change which AWS IoT actions it calls. */
export type IotRegistryModes = Pick<IotDeviceRegistryOptions, 'policyAttachment' | 'certificateRegistration'>;

/**
 * The AWS IoT actions each operation calls in the given modes. `DescribeCertificate` also stands behind the
 * operations that need a certificate's ARN (attach, detach) or its current status (an update AWS IoT refuses).
 */
const ACTIONS_BY_OPERATION: { readonly [O in RegistryOperation]: (modes: IotRegistryModes) => readonly IotRegistryIamAction[] } = {
  describeCertificate: () => ['iot:DescribeCertificate'],
  registerCertificate: (modes) => [modes.certificateRegistration === 'WITH_CA' ? 'iot:RegisterCertificate' : 'iot:RegisterCertificateWithoutCA'],
  updateCertificateStatus: () => ['iot:UpdateCertificate', 'iot:DescribeCertificate'],
  ensureThing: (modes) => ['iot:CreateThing', ...(modes.policyAttachment === 'THING_GROUP' ? (['iot:AddThingToThingGroup'] as const) : [])],
  attachCertificate: (modes) => ['iot:DescribeCertificate', 'iot:AttachThingPrincipal', ...(modes.policyAttachment === 'CERTIFICATE' ? (['iot:AttachPolicy'] as const) : [])],
  detachCertificate: (modes) => ['iot:DescribeCertificate', 'iot:DetachThingPrincipal', ...(modes.policyAttachment === 'CERTIFICATE' ? (['iot:DetachPolicy'] as const) : [])],
  setCaCertificateStatus: () => ['iot:UpdateCACertificate'],
};

/**
 * The AWS IoT actions the adapter calls when configured with these modes, for the operations a function uses
 * (all of them unless told): what the CDK stack grants that function, and nothing more (`AttachPolicy` on
 * certificates, for instance, would let a function attach any IoT policy of the account, so it is granted
 * only in `CERTIFICATE` mode). Answered in the order of {@link IOT_REGISTRY_IAM_ACTIONS}.
 */
export function iotRegistryIamActions(use: IotRegistryModes & { readonly operations?: readonly RegistryOperation[] }): readonly IotRegistryIamAction[] {
  const operations = use.operations ?? (Object.keys(ACTIONS_BY_OPERATION) as RegistryOperation[]);
  const needed = new Set(operations.flatMap((operation) => ACTIONS_BY_OPERATION[operation](use)));
  return IOT_REGISTRY_IAM_ACTIONS.filter((action) => needed.has(action));
}

interface IotDeviceRegistryCommonOptions {
  /**
   * The AWS IoT client to use.
   * @default - a client built with `retryingClientConfig` (adaptive retries absorb throttling)
   */
  readonly client?: IoTClient;
  /**
   * How issued certificates are registered: linked to the CA registered with AWS IoT (`RegisterCertificate`),
   * or on their own (`RegisterCertificateWithoutCA`, for a CA that is not registered, e.g. in multi-account mode).
   */
  readonly certificateRegistration: 'WITH_CA' | 'WITHOUT_CA';
}

/** The fleet policy is attached to the fleet's thing group: one attachment for the whole fleet, clear of the 15 TPS `AttachPolicy` quota. */
export interface ThingGroupAttachmentOptions extends IotDeviceRegistryCommonOptions {
  readonly policyAttachment: 'THING_GROUP';
  /** The fleet's thing group, which the policy is attached to; every thing is added to it. */
  readonly thingGroupName: string;
}

/** The fleet policy is attached to each certificate (`AttachPolicy` per certificate). */
export interface CertificateAttachmentOptions extends IotDeviceRegistryCommonOptions {
  readonly policyAttachment: 'CERTIFICATE';
  /** The fleet's IoT policy, attached to each certificate. */
  readonly policyName: string;
}

/** Where the fleet policy applies decides what else the adapter needs: a thing group, or a policy to attach. */
export type IotDeviceRegistryOptions = ThingGroupAttachmentOptions | CertificateAttachmentOptions;

/**
 * AWS IoT's certificate statuses → the port's. PENDING_TRANSFER (being transferred to another account) and
 * REGISTER_INACTIVE (registered, never activated) are states the lifecycle never puts a certificate in: the
 * adapter refuses them instead of guessing what they mean for a device.
 */
const PORT_STATUS_OF: Readonly<Record<CertificateStatus, RegistryCertificateStatus | undefined>> = {
  PENDING_ACTIVATION: 'PENDING_ACTIVATION',
  ACTIVE: 'ACTIVE',
  INACTIVE: 'INACTIVE',
  REVOKED: 'REVOKED',
  PENDING_TRANSFER: undefined,
  REGISTER_INACTIVE: undefined,
};

const SERVICE = 'AWS IoT';

/** A certificate's ARN never changes; remembering a bounded number of them saves `DescribeCertificate` calls (10 TPS quota). */
const MAX_CACHED_ARNS = 1000;

function portStatusOf(certificateId: string, status: string): RegistryCertificateStatus {
  const mapped = Object.hasOwn(PORT_STATUS_OF, status) ? PORT_STATUS_OF[status as CertificateStatus] : undefined;
  if (mapped === undefined) {
    throw new UpstreamError(
      'UPSTREAM_FAILURE',
      `${SERVICE} shows certificate ${certificateId} as ${status}, a status the lifecycle does not handle (only ${Object.values(PORT_STATUS_OF).filter(Boolean).join(', ')}).`,
      false,
      { details: { certificateId, status } },
    );
  }
  return mapped;
}

const notRegistered = (certificateId: string, cause: unknown) =>
  new NotFoundError('CERTIFICATE_NOT_FOUND', `Certificate ${certificateId} is not registered with AWS IoT.`, { cause, details: { certificateId } });

/**
 * The device registry on AWS IoT Core: certificates with their status, things, the fleet's
 * thing group, and the links between them. Every method is safe to repeat.
 */
export class IotDeviceRegistry implements DeviceRegistry {
  private readonly client: IoTClient;
  private readonly arnById = new Map<string, string>();

  public constructor(private readonly options: IotDeviceRegistryOptions) {
    this.client = options.client ?? new IoTClient(retryingClientConfig);
  }

  public async describeCertificate(certificateId: string): Promise<RegistryCertificate> {
    let description;
    try {
      ({ certificateDescription: description } = await this.client.send(new DescribeCertificateCommand({ certificateId })));
    } catch (error) {
      if (errorName(error) === 'ResourceNotFoundException') throw notRegistered(certificateId, error);
      throw toUpstreamError(error, SERVICE, 'DescribeCertificate');
    }
    if (!description?.certificatePem || !description.status) {
      throw new UpstreamError('UPSTREAM_FAILURE', `${SERVICE} DescribeCertificate answered without the PEM or status of certificate ${certificateId}.`, false);
    }
    if (description.certificateArn) this.rememberArn(certificateId, description.certificateArn);
    return {
      certificateId: description.certificateId ?? certificateId,
      certificatePem: description.certificatePem,
      status: portStatusOf(certificateId, description.status),
      ...(description.caCertificateId ? { caCertificateId: description.caCertificateId } : {}),
    };
  }

  public async registerCertificate(request: RegisterCertificateRequest): Promise<RegisteredCertificate> {
    const withCa = this.options.certificateRegistration === 'WITH_CA';
    const operation = withCa ? 'RegisterCertificate' : 'RegisterCertificateWithoutCA';
    try {
      const { certificateId, certificateArn } = withCa
        ? await this.client.send(
            new RegisterCertificateCommand({ certificatePem: request.certificatePem, caCertificatePem: request.caCertificatePem, status: 'ACTIVE' }),
          )
        : await this.client.send(new RegisterCertificateWithoutCACommand({ certificatePem: request.certificatePem, status: 'ACTIVE' }));
      const id = certificateId ?? (await certificateIdOf(request.certificatePem));
      if (certificateArn) this.rememberArn(id, certificateArn);
      return { certificateId: id, alreadyRegistered: false };
    } catch (error) {
      if (errorName(error) !== 'ResourceAlreadyExistsException') throw toUpstreamError(error, SERVICE, operation);
      // Registered before (a retried request): same certificate, same id. Its status is left as it is.
      const { resourceId, resourceArn } = error as { resourceId?: string; resourceArn?: string };
      const id = resourceId ?? (await certificateIdOf(request.certificatePem));
      if (resourceArn) this.rememberArn(id, resourceArn);
      return { certificateId: id, alreadyRegistered: true };
    }
  }

  public async updateCertificateStatus(certificateId: string, status: 'ACTIVE' | 'INACTIVE' | 'REVOKED'): Promise<void> {
    try {
      await this.client.send(new UpdateCertificateCommand({ certificateId, newStatus: status satisfies CertificateStatus }));
    } catch (error) {
      const name = errorName(error);
      if (name === 'ResourceNotFoundException') throw notRegistered(certificateId, error);
      if (name !== 'CertificateStateException') throw toUpstreamError(error, SERVICE, 'UpdateCertificate');
      // AWS IoT refuses some changes, including some to the status the certificate already has.
      const { status: current } = await this.describeCertificate(certificateId);
      if (current === status) return;
      throw new LifecycleError('INVALID_TRANSITION', `Certificate ${certificateId} is ${current} in AWS IoT and cannot become ${status}.`, {
        cause: error,
        details: { certificateId, from: current, to: status },
      });
    }
  }

  public async setCaCertificateStatus(caCertificateId: string, status: 'INACTIVE'): Promise<void> {
    try {
      // Setting the status and auto-registration a CA already has succeeds: a retry needs nothing else.
      await this.client.send(new UpdateCACertificateCommand({ certificateId: caCertificateId, newStatus: status, newAutoRegistrationStatus: 'DISABLE' }));
    } catch (error) {
      if (errorName(error) === 'ResourceNotFoundException') {
        throw new NotFoundError('CA_NOT_FOUND', `CA ${caCertificateId} is not registered with AWS IoT.`, { cause: error, details: { caCertificateId } });
      }
      throw toUpstreamError(error, SERVICE, 'UpdateCACertificate');
    }
  }

  public async ensureThing(thingName: string, attributes: Readonly<Record<string, string>>): Promise<void> {
    try {
      await this.client.send(new CreateThingCommand({ thingName, attributePayload: { attributes: { ...attributes } } }));
    } catch (error) {
      // The thing exists (with other attributes, or created by a concurrent duplicate): that is all we need.
      if (errorName(error) !== 'ResourceAlreadyExistsException') throw toUpstreamError(error, SERVICE, 'CreateThing');
    }
    const { options } = this;
    if (options.policyAttachment === 'THING_GROUP') {
      // Adding a thing to a group it is already in succeeds.
      await this.call('AddThingToThingGroup', () => this.client.send(new AddThingToThingGroupCommand({ thingGroupName: options.thingGroupName, thingName })));
    }
  }

  public async attachCertificate(thingName: string, certificateId: string): Promise<void> {
    const principal = await this.certificateArn(certificateId);
    try {
      await this.client.send(new AttachThingPrincipalCommand({ thingName, principal }));
    } catch (error) {
      if (errorName(error) === 'ResourceNotFoundException') {
        throw new NotFoundError('DEVICE_NOT_FOUND', `Thing ${thingName} does not exist in AWS IoT.`, { cause: error, details: { thingName } });
      }
      throw toUpstreamError(error, SERVICE, 'AttachThingPrincipal');
    }
    const { options } = this;
    if (options.policyAttachment === 'CERTIFICATE') {
      await this.call('AttachPolicy', () => this.client.send(new AttachPolicyCommand({ policyName: options.policyName, target: principal })));
    }
  }

  public async detachCertificate(thingName: string, certificateId: string): Promise<void> {
    let principal: string;
    try {
      principal = await this.certificateArn(certificateId);
    } catch (error) {
      // No certificate, no link to undo.
      if (error instanceof NotFoundError) return;
      throw error;
    }
    await this.ignoringNotFound('DetachThingPrincipal', () => this.client.send(new DetachThingPrincipalCommand({ thingName, principal })));
    const { options } = this;
    if (options.policyAttachment === 'CERTIFICATE') {
      await this.ignoringNotFound('DetachPolicy', () => this.client.send(new DetachPolicyCommand({ policyName: options.policyName, target: principal })));
    }
  }

  private async certificateArn(certificateId: string): Promise<string> {
    const cached = this.arnById.get(certificateId);
    if (cached) return cached;
    await this.describeCertificate(certificateId);
    const arn = this.arnById.get(certificateId);
    if (!arn) throw new UpstreamError('UPSTREAM_FAILURE', `${SERVICE} DescribeCertificate answered without the ARN of certificate ${certificateId}.`, false);
    return arn;
  }

  private rememberArn(certificateId: string, arn: string): void {
    if (this.arnById.size >= MAX_CACHED_ARNS && !this.arnById.has(certificateId)) {
      const oldest = this.arnById.keys().next();
      if (!oldest.done) this.arnById.delete(oldest.value);
    }
    this.arnById.set(certificateId, arn);
  }

  private async call<T>(operation: string, send: () => Promise<T>): Promise<T> {
    try {
      return await send();
    } catch (error) {
      throw toUpstreamError(error, SERVICE, operation);
    }
  }

  private async ignoringNotFound(operation: string, send: () => Promise<unknown>): Promise<void> {
    try {
      await send();
    } catch (error) {
      if (errorName(error) !== 'ResourceNotFoundException') throw toUpstreamError(error, SERVICE, operation);
    }
  }
}
