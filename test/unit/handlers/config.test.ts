import { readConfig } from '../../../functions/handlers/config';

const complete = {
  DEVICE_TABLE_NAME: 'devices',
  CA_ARN: 'arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555',
  CA_SIGNING_ALGORITHM: 'SHA256WITHECDSA',
  CA_TEMPLATE_ARN: 'arn:aws:acm-pca:::template/EndEntityClientAuthCertificate/V1',
  THING_GROUP_NAME: 'fleet',
  ENROLLMENT_POLICY: 'open',
  CERTIFICATE_VALIDITY_DAYS: '365',
};

describe('readConfig', () => {
  test('reads and converts the variables a function asks for', () => {
    expect(readConfig(['DEVICE_TABLE_NAME', 'CERTIFICATE_VALIDITY_DAYS'], complete)).toEqual({ DEVICE_TABLE_NAME: 'devices', CERTIFICATE_VALIDITY_DAYS: 365 });
  });

  test('fails naming the missing variable and what it is for', () => {
    const { DEVICE_TABLE_NAME: _omitted, ...env } = complete;
    expect(() => readConfig(['DEVICE_TABLE_NAME', 'CA_ARN'], env)).toThrow(
      expect.objectContaining({ code: 'CONFIGURATION_ERROR', message: 'Configuration error: DEVICE_TABLE_NAME is not set (the DynamoDB table of devices, certificates and audit events).' }),
    );
  });

  test.each([
    ['CA_ARN', 'arn:aws:s3:::bucket', 'CA_ARN is invalid: must be an AWS Private CA ARN'],
    ['ENROLLMENT_POLICY', 'anyone', 'ENROLLMENT_POLICY is invalid'],
    ['CERTIFICATE_VALIDITY_DAYS', 'ten', 'CERTIFICATE_VALIDITY_DAYS is invalid'],
  ])('fails when %s is malformed (%s)', (name, value, fragment) => {
    expect(() => readConfig([name as keyof typeof complete], { ...complete, [name]: value })).toThrow(fragment);
  });
});
