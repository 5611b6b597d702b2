import { GetCertificateCommand, type ACMPCAClient, type GetCertificateCommandOutput } from '@aws-sdk/client-acm-pca';
import { errorName } from './aws-errors';

/** Polling of `GetCertificate` while Private CA signs (it answers RequestInProgressException until then). */
export const ISSUANCE_POLLING = {
  firstDelayMs: 200,
  maxDelayMs: 2000,
  defaultMaxWaitMs: 30_000,
} as const;

export interface CollectOptions {
  readonly certificateAuthorityArn: string;
  readonly certificateArn: string;
  /** How long to wait in all before giving up with `IssuanceStillInProgressError`. */
  readonly maxWaitMs: number;
  readonly sleep: (milliseconds: number) => Promise<void>;
}

/** Private CA had not finished signing within the wait: the certificate can still be collected later with its ARN. */
export class IssuanceStillInProgressError extends Error {
  public constructor(
    public readonly certificateArn: string,
    public readonly waitedMs: number,
    options?: { cause?: unknown },
  ) {
    super(`AWS Private CA had not finished issuing certificate ${certificateArn} after ${waitedMs} ms.`, options);
    this.name = 'IssuanceStillInProgressError';
  }
}

/**
 * Collects an issued certificate: `GetCertificate` with exponential backoff (ISSUANCE_POLLING) while Private CA answers
 * RequestInProgressException, up to `maxWaitMs`. Any other error is thrown at once. The SDK's
 * `waitUntilCertificateIssued` is not used: it retries every error (access denied included) until its deadline and
 * waits in whole seconds, where most certificates are ready in well under one.
 */
export async function collectIssuedCertificate(client: ACMPCAClient, options: CollectOptions): Promise<GetCertificateCommandOutput> {
  let waitedMs = 0;
  for (let delayMs: number = ISSUANCE_POLLING.firstDelayMs; ; delayMs = Math.min(delayMs * 2, ISSUANCE_POLLING.maxDelayMs)) {
    try {
      return await client.send(new GetCertificateCommand({ CertificateAuthorityArn: options.certificateAuthorityArn, CertificateArn: options.certificateArn }));
    } catch (error) {
      if (errorName(error) !== 'RequestInProgressException') throw error;
      const nextMs = Math.min(delayMs, options.maxWaitMs - waitedMs);
      if (nextMs <= 0) throw new IssuanceStillInProgressError(options.certificateArn, waitedMs, { cause: error });
      await options.sleep(nextMs);
      waitedMs += nextMs;
    }
  }
}
