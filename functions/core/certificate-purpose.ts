import type * as x509 from '@peculiar/x509';
import { ValidationError } from './errors';

/**
 * What a device certificate is for, read from its subject:
 * - `BOOTSTRAP`: the subject's organizational unit is exactly `bootstrap`. A long-lived certificate made at manufacture
 *   that the fleet policy confines to the rotation topics, so a device whose operational certificate expired (or was
 *   refused) can rotate back to a working one (docs/rotation.md, "Recovery after expiry").
 * - `OPERATIONAL`: every other certificate (no OU, or one OU other than `bootstrap`). Records written before the
 *   purpose existed are operational.
 */
export type CertificatePurpose = 'BOOTSTRAP' | 'OPERATIONAL';

/** The OU value that makes a certificate a bootstrap certificate; the fleet policy's Deny tests the same value. */
export const BOOTSTRAP_ORGANIZATIONAL_UNIT = 'bootstrap';

/**
 * The purpose a subject gives, or a refusal when the subject would make AWS IoT and us disagree:
 * - at most one OU: AWS IoT's `iot:Certificate.Subject.OrganizationalUnit` is the *first* OU only, so
 *   `OU=x, OU=bootstrap` would be a bootstrap certificate for us and an unconfined one for the policy;
 * - an OU that is `bootstrap` in another case (`Bootstrap`) is refused: the policy's `StringEquals` is case-sensitive,
 *   so it would not be confined, yet a reader would take it for one.
 */
export function purposeOfSubject(subject: x509.Name, code: 'INVALID_CSR' | 'INVALID_CERTIFICATE'): CertificatePurpose {
  const units = subject.getField('OU');
  const noun = code === 'INVALID_CSR' ? 'The CSR' : 'The certificate';
  if (units.length > 1) {
    throw new ValidationError(code, `${noun} subject holds ${units.length} organizational units (OU): give at most one (OU=${BOOTSTRAP_ORGANIZATIONAL_UNIT} for a bootstrap certificate).`);
  }
  const [unit] = units;
  if (unit === undefined) return 'OPERATIONAL';
  if (unit === BOOTSTRAP_ORGANIZATIONAL_UNIT) return 'BOOTSTRAP';
  if (unit.toLowerCase() === BOOTSTRAP_ORGANIZATIONAL_UNIT) {
    throw new ValidationError(code, `${noun} subject OU "${unit}" is not "${BOOTSTRAP_ORGANIZATIONAL_UNIT}": a bootstrap certificate's OU is exactly "${BOOTSTRAP_ORGANIZATIONAL_UNIT}" (lower case).`);
  }
  return 'OPERATIONAL';
}

/** A record's purpose; records written before purposes existed are operational. */
export const purposeOf = (certificate: { readonly purpose?: CertificatePurpose }): CertificatePurpose => certificate.purpose ?? 'OPERATIONAL';
