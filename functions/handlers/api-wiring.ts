import type { DeviceLifecycle } from '../core/lifecycle';
import { systemClock, type Clock } from '../core/ports';
import { awsLifecycle, LIFECYCLE_VARIABLES } from './aws-wiring';
import { readConfig } from './config';

/** The API function's AWS wiring (what `createApiHandler` in api.ts takes), built once per cold start. */
export function apiDependencies(): { readonly lifecycle: DeviceLifecycle; readonly clock: Clock } {
  return { lifecycle: awsLifecycle(readConfig(LIFECYCLE_VARIABLES)), clock: systemClock };
}
