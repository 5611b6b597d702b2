import { ValidationError } from './errors';

/** AWS IoT thing names: 1-128 of `[a-zA-Z0-9:_-]`. A device id is its thing name, so it obeys the same rule. */
export const DEVICE_ID_PATTERN = /^[a-zA-Z0-9:_-]{1,128}$/;

export const isValidDeviceId = (value: string): boolean => DEVICE_ID_PATTERN.test(value);

export function assertValidDeviceId(value: string): string {
  if (!isValidDeviceId(value)) {
    throw new ValidationError(
      'INVALID_DEVICE_ID',
      `Device id "${value.slice(0, 140)}" is not valid: use 1 to 128 characters from a-z, A-Z, 0-9, ":", "_" and "-".`,
    );
  }
  return value;
}
