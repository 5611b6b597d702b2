/**
 * Typed errors of the domain. Each carries a stable, machine-readable `code`
 * that every outer layer (HTTP API, JITR handler, CLI) maps to its answer;
 * messages of client errors are written for the caller and say what to fix.
 */
export const ERROR_CODES = [
  'INVALID_REQUEST',
  'INVALID_CSR',
  'INVALID_CERTIFICATE',
  'INVALID_DEVICE_ID',
  'PAYLOAD_TOO_LARGE',
  'DEVICE_NOT_FOUND',
  'CERTIFICATE_NOT_FOUND',
  'DEVICE_ALREADY_EXISTS',
  'INVALID_TRANSITION',
  'CONFLICT',
  'ENROLLMENT_REFUSED',
  'IDEMPOTENCY_KEY_REUSED',
  'REQUEST_IN_PROGRESS',
  'CERTIFICATE_WITHDRAWN',
  'PRINCIPAL_NOT_ALLOWED',
  'ROTATION_IN_PROGRESS',
  'NO_ROTATION_PENDING',
  'CAMPAIGN_NOT_FOUND',
  'CAMPAIGN_LIMIT_REACHED',
  'CA_NOT_FOUND',
  'CA_IS_CURRENT',
  'CA_STILL_IN_USE',
  'UPSTREAM_THROTTLED',
  'UPSTREAM_FAILURE',
  'CONFIGURATION_ERROR',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export interface LifecycleErrorOptions {
  readonly cause?: unknown;
  readonly details?: Readonly<Record<string, unknown>>;
}

export class LifecycleError extends Error {
  public readonly code: ErrorCode;
  public readonly details: Readonly<Record<string, unknown>>;

  public constructor(code: ErrorCode, message: string, options: LifecycleErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = 'LifecycleError';
    this.code = code;
    this.details = options.details ?? {};
  }
}

export class ValidationError extends LifecycleError {
  public constructor(
    code: Extract<ErrorCode, 'INVALID_REQUEST' | 'INVALID_CSR' | 'INVALID_CERTIFICATE' | 'INVALID_DEVICE_ID' | 'PAYLOAD_TOO_LARGE'>,
    message: string,
    options?: LifecycleErrorOptions,
  ) {
    super(code, message, options);
    this.name = 'ValidationError';
  }
}

export class NotFoundError extends LifecycleError {
  public constructor(code: Extract<ErrorCode, 'DEVICE_NOT_FOUND' | 'CERTIFICATE_NOT_FOUND' | 'CA_NOT_FOUND'>, message: string, options?: LifecycleErrorOptions) {
    super(code, message, options);
    this.name = 'NotFoundError';
  }
}

export class InvalidTransitionError extends LifecycleError {
  public constructor(
    public readonly entity: 'DEVICE' | 'CERTIFICATE',
    public readonly from: string,
    public readonly to: string,
    options?: LifecycleErrorOptions,
  ) {
    super('INVALID_TRANSITION', `A ${entity.toLowerCase()} in state ${from} cannot move to ${to}.`, {
      ...options,
      details: { entity, from, to, ...options?.details },
    });
    this.name = 'InvalidTransitionError';
  }
}

/** Another change to the same record won the race; re-read and decide again. */
export class ConflictError extends LifecycleError {
  public constructor(message: string, options?: LifecycleErrorOptions) {
    super('CONFLICT', message, options);
    this.name = 'ConflictError';
  }
}

/** The handle (Idempotency-Key) names another request of the same caller: another operation, target or payload. */
export class IdempotencyKeyReusedError extends LifecycleError {
  public constructor(details: Readonly<Record<string, unknown>>) {
    super('IDEMPOTENCY_KEY_REUSED', 'This Idempotency-Key was used for a different request (another operation, device or body): use a new key for a new request.', { details });
    this.name = 'IdempotencyKeyReusedError';
  }
}

/** Another execution of the same operation (a concurrent retry) holds it; retrying shortly answers its outcome. */
export class RequestInProgressError extends LifecycleError {
  public constructor(options?: LifecycleErrorOptions) {
    super('REQUEST_IN_PROGRESS', 'A request with this Idempotency-Key is still running: retry in a moment with the same key.', options);
    this.name = 'RequestInProgressError';
  }
}

export class DeviceAlreadyExistsError extends LifecycleError {
  public constructor(deviceId: string) {
    super('DEVICE_ALREADY_EXISTS', `Device ${deviceId} already exists.`, { details: { deviceId } });
    this.name = 'DeviceAlreadyExistsError';
  }
}

export class EnrollmentRefusedError extends LifecycleError {
  public constructor(message: string, options?: LifecycleErrorOptions) {
    super('ENROLLMENT_REFUSED', message, options);
    this.name = 'EnrollmentRefusedError';
  }
}

/** A dependency (AWS IoT, the CA, the table) failed; `retryable` says whether trying again can help. */
export class UpstreamError extends LifecycleError {
  public constructor(
    code: Extract<ErrorCode, 'UPSTREAM_THROTTLED' | 'UPSTREAM_FAILURE'>,
    message: string,
    public readonly retryable: boolean,
    options?: LifecycleErrorOptions,
  ) {
    super(code, message, options);
    this.name = 'UpstreamError';
  }
}

export class ConfigurationError extends LifecycleError {
  public constructor(message: string, options?: LifecycleErrorOptions) {
    super('CONFIGURATION_ERROR', message, options);
    this.name = 'ConfigurationError';
  }
}

export const isLifecycleError = (error: unknown): error is LifecycleError => error instanceof LifecycleError;
