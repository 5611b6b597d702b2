import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type { LocalDeviceRegistry } from '../../functions/adapters/local/local-device-registry';
import { authorize, type IotAction, type IotAuthorization, type IotRequestContext } from '../../functions/adapters/local/iot-policy-evaluator';

/** Who is on a connection: its certificate (from TLS) and its MQTT client id (from CONNECT). */
export interface ConnectionIdentity {
  readonly certificateId: string;
  readonly clientId: string;
}

export interface PolicyAuthorizerOptions {
  readonly region: string;
  readonly accountId: string;
}

/**
 * AWS IoT Core's authorization of an MQTT action, for the local broker. The connection is
 * associated with a thing when the client id names a thing attached to the certificate (then
 * `iot:Connection.Thing.ThingName` is the client id and `iot:Connection.Thing.IsAttached` is true);
 * the policies evaluated are those of that thing's groups (the fleet policy is attached to the
 * fleet's thing group, never to certificates). Everything is read from the registry at each call,
 * so a detach or a status change applies to the very next action. The certificate's subject OU feeds the
 * `iot:Certificate.Subject.OrganizationalUnit` condition the fleet policy confines bootstrap certificates with.
 */
export class PolicyAuthorizer {
  /** The subject OUs of each certificate seen, by id: a certificate's bytes (so its subject) never change under its id. */
  private readonly organizationalUnits = new Map<string, readonly string[]>();

  public constructor(
    private readonly registry: LocalDeviceRegistry,
    private readonly options: PolicyAuthorizerOptions,
  ) {}

  public context(identity: ConnectionIdentity): IotRequestContext {
    const thing = this.registry.findThing(identity.clientId);
    const thingAttached = thing?.principals.includes(identity.certificateId) ?? false;
    return {
      region: this.options.region,
      accountId: this.options.accountId,
      clientId: identity.clientId,
      ...(thingAttached ? { thingName: identity.clientId } : {}),
      thingAttached,
      certificateId: identity.certificateId,
      subjectOrganizationalUnits: this.subjectOrganizationalUnits(identity.certificateId),
    };
  }

  /** `iot:Certificate.Subject.OrganizationalUnit` comes from the certificate itself, as AWS IoT Core reads it at connect. */
  private subjectOrganizationalUnits(certificateId: string): readonly string[] {
    let units = this.organizationalUnits.get(certificateId);
    if (units === undefined) {
      const certificatePem = this.registry.findCertificate(certificateId)?.certificatePem;
      if (certificatePem === undefined) return [];
      units = new x509.X509Certificate(certificatePem).subjectName.getField('OU');
      this.organizationalUnits.set(certificateId, units);
    }
    return units;
  }

  /** `resource`: the client id (Connect), topic (Publish, Receive) or topic filter (Subscribe). */
  public authorize(action: IotAction, resource: string, identity: ConnectionIdentity): IotAuthorization {
    const status = this.registry.findCertificate(identity.certificateId)?.status;
    if (status !== 'ACTIVE') return { allowed: false, reason: `${action} refused: the certificate is ${status ?? 'not registered'}` };
    const context = this.context(identity);
    if (context.thingName === undefined) {
      // No thing is associated with the connection, so no thing group policy applies (and none is attached to certificates).
      const why = `no thing named "${identity.clientId}" is attached to this certificate, so no policy applies (the client id must be the device's thing name)`;
      return { allowed: false, reason: `${action} on ${resource} refused: ${why}` };
    }
    return authorize(this.registry.policiesOfThing(context.thingName), action, resource, context);
  }
}
