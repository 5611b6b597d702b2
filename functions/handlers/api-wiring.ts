import type { DeviceLifecycle } from '../core/lifecycle';
import { systemClock, type Clock, type DeviceMessenger } from '../core/ports';
import { IotDataMessenger } from '../adapters/aws/iot-data-messenger';
import { awsLifecycle, LIFECYCLE_VARIABLES } from './aws-wiring';
import { readConfig } from './config';

/** The API function's AWS wiring (what `createApiHandler` in api.ts takes), built once per cold start. */
export function apiDependencies(): { readonly lifecycle: DeviceLifecycle; readonly clock: Clock; readonly messenger: DeviceMessenger } {
  const config = readConfig([...LIFECYCLE_VARIABLES, 'IOT_DATA_ENDPOINT']);
  return { lifecycle: awsLifecycle(config), clock: systemClock, messenger: new IotDataMessenger(config.IOT_DATA_ENDPOINT ? { endpointHost: config.IOT_DATA_ENDPOINT } : {}) };
}
