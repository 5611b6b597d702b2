import { Validations, type RemovalPolicy } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import type { RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import { iotRegistryIamActions } from '../functions/adapters/aws/iot-device-registry';
import { CA_OPERATIONS, REGISTRY_MODES, REGISTRY_OPERATIONS } from '../functions/handlers/config';
import { API_INTEGRATION_TIMEOUT, DeviceApi } from './device-api';
import { EXPIRING_TOPICS_RESOURCE } from './expiry-monitor';
import {
  acknowledgeRegistryFunctionWildcards,
  HANDLER_ENTRIES,
  LifecycleFunction,
  type CertificateAuthorityBinding,
  type FleetBinding,
} from './lifecycle-function';
import type { EnrollmentPolicy } from './settings';
import { privateCaIamActions } from '../functions/adapters/aws/private-ca-certificate-authority';

export interface DeviceApiFunctionProps {
  readonly deviceTable: ITable;
  readonly certificateAuthority: CertificateAuthorityBinding;
  readonly fleet: FleetBinding;
  readonly issuance: { readonly enrollmentPolicy: EnrollmentPolicy; readonly certificateValidityDays: number };
  readonly apiName: string;
  readonly throttling: { readonly rateLimit: number; readonly burstLimit: number };
  /** A regional AWS WAFv2 web ACL to put in front of the stage. @default - none */
  readonly webAclArn?: string;
  readonly logRetention: RetentionDays;
  readonly removalPolicy: RemovalPolicy;
}

export interface DeviceApiWithFunction {
  readonly apiFunction: LifecycleFunction;
  readonly api: DeviceApi;
}

/**
 * The device REST API and the function behind it, with the grants of what its flows call. Created directly in
 * `scope` (ids `ApiFunction*` and `Api`), so their logical ids are those of a deployed stack.
 */
export function addDeviceApi(scope: Construct, props: DeviceApiFunctionProps): DeviceApiWithFunction {
  const apiFunction = new LifecycleFunction(scope, 'ApiFunction', {
    entry: HANDLER_ENTRIES.api,
    description: 'Device certificate lifecycle REST API',
    // As long as API Gateway waits. Signing a CSR waits for AWS Private CA (IssueCertificate, then GetCertificate until
    // ready) at most PRIVATE_CA_MAX_WAIT_MS (functions/handlers/aws-wiring.ts), which leaves the rest for DynamoDB and
    // AWS IoT (test/infra/function-wiring.test.ts checks the margin).
    timeout: API_INTEGRATION_TIMEOUT,
    logRetention: props.logRetention,
    removalPolicy: props.removalPolicy,
  })
    .useDeviceTable(props.deviceTable)
    .useCertificateAuthority(props.certificateAuthority, privateCaIamActions(CA_OPERATIONS.api))
    .useFleet(props.fleet, iotRegistryIamActions({ ...REGISTRY_MODES, operations: REGISTRY_OPERATIONS.api }))
    .useIssuancePolicy(props.issuance)
    // POST /devices/{id}/rotate publishes the renewal notice to the device.
    .useDeviceMessaging(EXPIRING_TOPICS_RESOURCE);
  acknowledgeRegistryFunctionWildcards(
    apiFunction,
    props.deviceTable,
    'iot:RegisterCertificate and iot:DescribeEndpoint have no resource type in the Service Authorization Reference, so IAM only accepts "*"; neither do xray:PutTraceSegments and xray:PutTelemetryRecords (X-Ray tracing).',
  );
  Validations.of(apiFunction.executionRole).acknowledge({
    id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:topic/${EXPIRING_TOPICS_RESOURCE}]`,
    reason: 'iot:Publish of the renewal notice a backend asks for (POST /devices/{id}/rotate): thing names are only known at run time; the grant is limited to the expiring topic of every device, in this account and region.',
  });
  Validations.of(apiFunction.executionRole).acknowledge({
    id: 'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:cacert/*]',
    reason:
      'iot:UpdateCACertificate only, for an operator retiring a previous fleet CA (POST /certificate-authorities/{caCertificateId}/deactivate): the previous CAs\' ids (SHA-256 fingerprints) are not known at synth; ' +
      'the function refuses any id that is not a previous CA of the fleet, and the grant is limited to CA certificates of this account and region.',
  });

  const api = new DeviceApi(scope, 'Api', {
    handler: apiFunction,
    apiName: props.apiName,
    throttling: props.throttling,
    logRetention: props.logRetention,
    removalPolicy: props.removalPolicy,
    webAclArn: props.webAclArn,
  });
  return { apiFunction, api };
}
