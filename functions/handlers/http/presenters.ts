import type { AuditEvent, CertificateRecord, Device, DeviceView } from '../../core/model';
import { effectiveCertificateStatus } from '../../core/state-machines';

/** What the API shows of a certificate: its effective status (EXPIRED is derived), never internal fields. */
export function presentCertificate(certificate: CertificateRecord, now: Date) {
  return {
    certificateId: certificate.certificateId,
    serialNumber: certificate.serialNumber,
    status: effectiveCertificateStatus(certificate, now),
    source: certificate.source,
    subject: certificate.subject,
    issuer: certificate.issuer,
    keyAlgorithm: certificate.keyAlgorithm,
    notBefore: certificate.notBefore,
    notAfter: certificate.notAfter,
    ...(certificate.revocationReason ? { revocationReason: certificate.revocationReason } : {}),
    ...(certificate.statusReason ? { statusReason: certificate.statusReason } : {}),
    ...(certificate.rotatedFrom ? { rotatedFrom: certificate.rotatedFrom } : {}),
    createdAt: certificate.createdAt,
    updatedAt: certificate.updatedAt,
  };
}

export function presentDevice(device: Device) {
  return {
    deviceId: device.deviceId,
    thingName: device.thingName,
    status: device.status,
    attributes: device.attributes,
    ...(device.statusReason ? { statusReason: device.statusReason } : {}),
    ...(device.revocationReason ? { revocationReason: device.revocationReason } : {}),
    ...(device.rotation ? { rotation: device.rotation } : {}),
    createdAt: device.createdAt,
    updatedAt: device.updatedAt,
  };
}

export function presentEvent(event: AuditEvent) {
  const { idempotencyKey: _key, ...visible } = event;
  return visible;
}

export function presentDeviceView(view: DeviceView, now: Date) {
  return {
    ...presentDevice(view.device),
    certificateIds: view.certificates.map((certificate) => certificate.certificateId),
    certificates: view.certificates.map((certificate) => presentCertificate(certificate, now)),
    events: view.events.map(presentEvent),
  };
}
