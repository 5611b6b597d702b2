/** What an app embedding the construct imports. */
export { DeviceCertificateLifecycle, resolveSettings, tableDefaults } from './device-certificate-lifecycle';
export type { ApiThrottling, DeviceCertificateLifecycleProps, ResolvedSettings } from './device-certificate-lifecycle';
export { DeviceCertificateLifecycleStack } from './device-certificate-lifecycle-stack';
export type { DeviceCertificateLifecycleStackProps } from './device-certificate-lifecycle-stack';
export { NewCertificateAuthority } from './certificate-authority';
export type { CaSubject, SubordinateCaCertificate } from './certificate-authority';
export { IotCaRegistration } from './iot-ca-registration';
export { DeviceApi, DEVICE_API_ROUTES } from './device-api';
export { LifecycleFunction, HANDLER_ENTRIES } from './lifecycle-function';
export { CONTEXT_VALUES, stackPropsFromContext } from './context';
export { CaKeyAlgorithm, CaType, CaUsageMode, DEFAULTS, EnrollmentPolicy, InvalidConfigurationError, LIMITS } from './settings';
