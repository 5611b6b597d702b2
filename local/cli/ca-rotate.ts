import { certificateIdOf } from '../../functions/core/x509';
import { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import { dataFiles, readPreviousCas, rotateCaMaterial } from '../data-dir';
import { localModeStatus, LocalModeRunningError } from './overview';

/** The subject of a rotated local CA, numbered: `iotcert local device CA 2`, 3, ... (the first is local-mode.ts's CA_COMMON_NAME). */
const ROTATED_CA_COMMON_NAME = 'iotcert local device CA';

export interface CaRotationReport {
  /** The new signing CA's certificate id. */
  readonly caCertificateId: string;
  /** The CA it replaced: still registered, ACTIVE with auto-registration on, at the next start. */
  readonly previousCaCertificateId: string;
  /** Every previous CA of the folder, oldest first. */
  readonly previousCaCertificateIds: readonly string[];
  readonly caCertificateFile: string;
}

/**
 * `iotcert ca rotate`: a CA rotation of the local mode's data folder, the local mode stopped. A new CA signs from the
 * next start on; the replaced one moves to `previous-cas/` and stays registered and accepted (JITR, rotation,
 * connects) until it is deactivated, so devices move over by rotating (`iotcert device rotate`).
 */
export async function rotateLocalCa(options: { readonly dataDir: string; readonly now?: Date }): Promise<CaRotationReport> {
  const status = await localModeStatus(options.dataDir);
  if (status.state !== 'STOPPED') {
    throw new LocalModeRunningError(`the local mode is running on ${options.dataDir} (pid ${status.pid ?? '?'}): stop it first, rotate the CA, then start it again.`);
  }
  const files = dataFiles(options.dataDir);
  const generation = (await readPreviousCas(files)).length + 2;
  const { material } = await SoftwareCertificateAuthority.create(`${ROTATED_CA_COMMON_NAME} ${generation}`, options.now ? { now: () => options.now as Date } : {});
  const { previousCaCertificateId } = await rotateCaMaterial(files, material);
  return {
    caCertificateId: await certificateIdOf(material.certificatePem),
    previousCaCertificateId,
    previousCaCertificateIds: (await readPreviousCas(files)).map((previous) => previous.caCertificateId),
    caCertificateFile: files.caCertificate,
  };
}
