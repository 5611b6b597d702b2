/** What an app embedding the construct imports. */
export { DeviceCertificateLifecycle } from './device-certificate-lifecycle';
export type { ApiThrottling, DeviceCertificateLifecycleProps } from './device-certificate-lifecycle';
export { tableDefaults } from './device-table';
export { DeviceCertificateLifecycleStack } from './device-certificate-lifecycle-stack';
export type { DeviceCertificateLifecycleStackProps } from './device-certificate-lifecycle-stack';
export { NewCertificateAuthority } from './certificate-authority';
export type { CaSubject, SubordinateCaCertificate } from './certificate-authority';
export { IotCaRegistration } from './iot-ca-registration';
export { ExpiryMonitor } from './expiry-monitor';
export type { ExpiryMonitorProps } from './expiry-monitor';
export { API_INTEGRATION_TIMEOUT, DeviceApi, DEVICE_API_ROUTES, GATEWAY_ERROR_RESPONSES } from './device-api';
export type { GatewayErrorResponse } from './device-api';
export { LifecycleFunction, HANDLER_ENTRIES } from './lifecycle-function';
export { CONTEXT_VALUES, stackPropsFromContext } from './context';
export { CaKeyAlgorithm, CaType, CaUsageMode, DEFAULTS, EnrollmentPolicy, InvalidConfigurationError, LIMITS, resolveSettings } from './settings';
export type { ResolvedSettings } from './settings';
